"""``/v1/namespaces/{namespace}/conversations``: create, list, get, suspend, resume, stop, turns."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from stoa_api.base import API_VERSION, NAME_PATTERN
from stoa_api.conversation import ConversationSpec
from stoa_api.status import ConversationStatus
from stoa_web.access import requires
from stoa_web.auth import Caller
from stoa_web.events import MAX_CURSOR_CHARS, CursorError, decode_cursor, finished
from stoa_web.models import Conversation, ConversationCreate, ConversationList, TurnPage, object_meta
from stoa_web.problems import ERROR_RESPONSES, ApiProblemError
from stoa_web.routes.table import RouteTable
from stoa_web.services import FIELD_MANAGER, Services, caller, services
from stoa_web.streams import plan_stream, run_stream, snapshot

router = RouteTable(prefix="/v1/namespaces/{namespace}/conversations", tags=["conversations"])
Namespace = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
Svc = Annotated[Services, Depends(services)]
Who = Annotated[Caller, Depends(caller)]
PLURAL = "conversations"
MERGE_PATCH = "application/merge-patch+json"


def to_conversation(item: dict[str, Any]) -> Conversation:
    spec: ConversationSpec | None
    try:
        spec, error = ConversationSpec.model_validate(item.get("spec") or {}), None
    except ValidationError as exc:
        spec, error = None, str(exc.errors()[0]["msg"])
    return Conversation(
        metadata=object_meta(item),
        spec=spec,
        spec_error=error,
        status=ConversationStatus.model_validate(item.get("status") or {}),
    )


async def read_conversation(svc: Services, who: Caller, namespace: str, name: str) -> dict[str, Any]:
    return await svc.as_caller(who, "GET", svc.path(namespace, PLURAL, name))


@router.get("", response_model=ConversationList, responses=ERROR_RESPONSES, summary="List conversations")
@requires("list", PLURAL)
async def list_conversations(namespace: Namespace, svc: Svc, who: Who) -> ConversationList:
    found = await svc.as_caller(who, "GET", svc.path(namespace, PLURAL))
    items = sorted(found.get("items") or [], key=lambda i: i["metadata"].get("creationTimestamp") or "")
    return ConversationList(items=[to_conversation(i) for i in reversed(items)])


@router.post(
    "",
    response_model=Conversation,
    status_code=201,
    responses=ERROR_RESPONSES,
    summary="Create a conversation (a Conversation resource, created with the caller's identity)",
)
@requires("create", PLURAL, name_param=None)
async def create_conversation(
    namespace: Namespace, body: ConversationCreate, svc: Svc, who: Who
) -> Conversation:
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "Conversation",
        "metadata": {"name": body.name, "namespace": namespace},
        "spec": body.spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
    }
    created = await svc.as_caller(
        who, "POST", svc.path(namespace, PLURAL), body=manifest, params={"fieldManager": FIELD_MANAGER}
    )
    return to_conversation(created)


@router.get("/{name}", response_model=Conversation, responses=ERROR_RESPONSES, summary="Get a conversation")
@requires("get", PLURAL)
async def get_conversation(namespace: Namespace, name: Name, svc: Svc, who: Who) -> Conversation:
    return to_conversation(await read_conversation(svc, who, namespace, name))


async def _patch_spec(
    svc: Services, who: Caller, namespace: str, name: str, spec: dict[str, Any]
) -> Conversation:
    patched = await svc.as_caller(
        who,
        "PATCH",
        svc.path(namespace, PLURAL, name),
        body={"spec": spec},
        params={"fieldManager": FIELD_MANAGER},
        content_type=MERGE_PATCH,
    )
    return to_conversation(patched)


@router.post("/{name}/suspend", response_model=Conversation, responses=ERROR_RESPONSES, summary="Suspend")
@requires("patch", PLURAL)
async def suspend_conversation(namespace: Namespace, name: Name, svc: Svc, who: Who) -> Conversation:
    """Sets ``spec.suspend: true``: the turn in flight finishes, the next one waits."""
    return await _patch_spec(svc, who, namespace, name, {"suspend": True})


@router.post("/{name}/resume", response_model=Conversation, responses=ERROR_RESPONSES, summary="Resume")
@requires("patch", PLURAL)
async def resume_conversation(namespace: Namespace, name: Name, svc: Svc, who: Who) -> Conversation:
    """Sets ``spec.suspend: false``."""
    return await _patch_spec(svc, who, namespace, name, {"suspend": False})


@router.post("/{name}/stop", response_model=Conversation, responses=ERROR_RESPONSES, summary="Stop for good")
@requires("patch", PLURAL)
async def stop_conversation(namespace: Namespace, name: Name, svc: Svc, who: Who) -> Conversation:
    """Sets ``spec.stop: true``: the conversation ends (phase Failed, reason "Stopped by request"); the
    transcript stays. It cannot be started again."""
    return await _patch_spec(svc, who, namespace, name, {"stop": True})


@router.get("/{name}/turns", response_model=TurnPage, responses=ERROR_RESPONSES, summary="Transcript page")
@requires("get", PLURAL)
async def list_turns(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    who: Who,
    *,
    after: Annotated[int, Query(ge=0, le=1_000_000, description="turns with seq above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TurnPage:
    """Stored turns in order. Reading them needs ``get`` on the Conversation, like the resource itself."""
    item = await read_conversation(svc, who, namespace, name)
    record = await svc.store.conversation(namespace, name, item["metadata"]["uid"])
    if record is None:
        return TurnPage(items=[], next_after=None)
    turns = await svc.store.turns(namespace, record.id, after, limit + 1)
    more = len(turns) > limit
    turns = turns[:limit]
    return TurnPage(items=turns, next_after=turns[-1].seq if more else None)


EVENTS_DOC = """Server-Sent Events: every turn as it is stored, phase changes, takeovers of its participants,
failovers of its model calls and circuit changes of its policies.

Each event's `id` is a cursor; reconnect with `Last-Event-ID: <id>` to get exactly what came after, from
any API replica. The first event (`hello`, no id) lists what the caller may not see (takeovers need `get`
on the Agent, circuit changes `get` on the ModelPolicy). The stream ends with `end` when the
conversation has finished and everything was sent; a reconnect after that is answered 204. It ends with
`error` when the token or the caller's access is gone (re-checked every `reauthSeconds`)."""


@router.get(
    "/{name}/events",
    response_class=StreamingResponse,
    responses={
        200: {"description": "text/event-stream", "content": {"text/event-stream": {}}},
        204: {"description": "the conversation ended and the cursor has seen everything"},
        **ERROR_RESPONSES,
    },
    summary="Live events (SSE), resumable with Last-Event-ID",
    description=EVENTS_DOC,
)
@requires("get", PLURAL)
async def conversation_events(
    namespace: Namespace,
    name: Name,
    svc: Svc,
    who: Who,
    last_event_id: Annotated[str | None, Header(max_length=MAX_CURSOR_CHARS)] = None,
) -> Response:
    try:
        cursor = decode_cursor(last_event_id)
    except CursorError as exc:
        raise ApiProblemError(400, str(exc)) from exc
    item = await read_conversation(svc, who, namespace, name)
    plan = await plan_stream(svc, who, item)
    if last_event_id:
        snap = await snapshot(svc, plan, cursor)
        if finished(cursor, snap):
            return Response(status_code=204)
    if svc.streams >= svc.settings.max_streams:
        raise ApiProblemError(503, f"too many open event streams ({svc.settings.max_streams}); retry later")
    return StreamingResponse(
        run_stream(svc, plan, who, cursor),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

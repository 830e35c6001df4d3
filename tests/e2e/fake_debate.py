"""A scripted debate model: Stoa's fake provider (``stoa_testing.fake_provider``) with replies that depend on
who asks, in its own thread and event loop, plus one "hold" to delete a pod in the middle of a turn.

The speaker is recognised by its persona (the system message the runtime sends). Debaters get a new
argument every turn (the runtime ends a debate whose speakers repeat themselves); the moderator opens,
closes each round with ``VERDICT: CONTINUE`` and ends the final turn with ``VERDICT: END <reason>``, the
verdict protocol of ``stoa_agents.turns.policy.parse_verdict``. Replies come at once (0 latency) except the
one held request, which waits until the test calls ``release()``: only that request, so when the pod that
sent it is killed, the standby's new request for the same turn is answered while the old one still waits.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from stoa_agents.turns.prompts import MODERATOR_CLOSING, MODERATOR_OPENING
from stoa_testing.fake_provider import Behaviour, FakeState, create_fake_app

PRO = [
    "AI creates jobs: hospitals hired data annotators and imaging technicians when diagnostic AI arrived.",
    "AI creates jobs: solar farms need drone inspectors and grid analysts who read machine forecasts.",
    "AI creates jobs: small shops sell worldwide because translation software opened new markets.",
    "AI creates jobs: warehouses that automated picking grew and hired more maintenance engineers.",
    "AI creates jobs: farmers using crop models saved harvests and took on seasonal crews again.",
    "AI creates jobs: game studios hired writers to direct generated worlds and voice actors to tune them.",
    "AI creates jobs: cybersecurity teams doubled because every automated system needs defenders.",
    "AI creates jobs: teachers with tutoring assistants reach more pupils and schools open new classes.",
    "AI creates jobs: biotech startups built on protein models employ thousands of lab scientists.",
    "AI creates jobs: mechanics retrain as robot technicians and earn higher wages than before.",
]
CON = [
    "AI takes jobs away: call centres in Manila replaced half their agents with voice bots last year.",
    "AI takes jobs away: self-checkout and vision cameras removed cashier shifts in every supermarket.",
    "AI takes jobs away: trucking pilots with autonomous rigs threaten millions of long-haul drivers.",
    "AI takes jobs away: translation agencies lost most freelance contracts to machine translation.",
    "AI takes jobs away: banks cut back-office clerks once document parsing software went live.",
    "AI takes jobs away: newsrooms let copy editors go and publish generated summaries instead.",
    "AI takes jobs away: illustrators report commissions falling as image generators spread.",
    "AI takes jobs away: paralegals doing discovery review are replaced by contract analysis tools.",
    "AI takes jobs away: warehouse robots mean fewer pickers, and the remaining ones earn less.",
    "AI takes jobs away: insurance adjusters are replaced by photo-based claim estimation apps.",
]
MODERATOR_QUESTIONS = [
    "Who benefits first from these new roles?",
    "What happens to workers who cannot retrain quickly?",
    "Are the new jobs as well paid as the old ones?",
    "How fast must schools change to keep up?",
    "Which industries will feel this within five years?",
    "Should companies pay for the retraining they cause?",
    "Do local towns gain or lose from remote automation?",
    "What evidence would change your mind?",
    "Is the productivity gain shared with workers?",
    "What should governments measure to know?",
]


NEXT_ASKED = re.compile(r"'NEXT: <name>' \(([^)]*)\)")


@dataclass(frozen=True)
class Call:
    """One chat request the fake answered (monotonic time, speaker, its n-th request, reply kind)."""

    at: float
    agent: str
    number: int
    kind: str


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content)


class DebateState(FakeState):
    """Replies by speaker; ``agents`` maps an agent name to (role, persona), from the applied manifests."""

    def __init__(self, agents: Mapping[str, tuple[str, str]]) -> None:
        super().__init__(model="debate-fake")
        self.last = deque(maxlen=10000)  # every request's path, headers and body (tests read what was sent)
        self.personas = {name: persona for name, (_, persona) in agents.items()}
        self.roles = {name: role for name, (role, _) in agents.items()}
        self.counts: dict[str, int] = {}
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def speaker(self, body: Mapping[str, Any]) -> str:
        messages = _messages(body)
        system = _text(messages[0]) if messages else ""
        for agent, persona in self.personas.items():
            if persona[:60] in system:
                return agent
        return "unknown"

    def reply_for(self, behaviour: Behaviour, body: dict[str, Any]) -> str:
        agent = self.speaker(body)
        prompt = "\n".join(_text(m) for m in _messages(body))
        with self._lock:
            number = self.counts[agent] = self.counts.get(agent, 0) + 1
        role = self.roles.get(agent, "")
        if role == "moderator":
            if MODERATOR_OPENING in prompt:
                kind, reply = (
                    "opening",
                    (
                        "Welcome to our debate on AI and the job market. Team A argues AI creates more good "
                        "jobs than it destroys; team B disagrees. Team A, please begin."
                    ),
                )
            elif MODERATOR_CLOSING in prompt:
                kind, reply = (
                    "closing",
                    (
                        "Both teams argued with concrete examples; team A showed more new industries, team B "
                        "more immediate losses. Team A argued slightly better with evidence of growth.\n"
                        "VERDICT: END both sides made their case within the planned rounds"
                    ),
                )
            else:
                question = MODERATOR_QUESTIONS[(number - 2) % len(MODERATOR_QUESTIONS)]
                # turnPolicy moderatorSelected: the task lists who may speak next; always pick the first.
                asked = NEXT_ASKED.search(prompt)
                pick = f"NEXT: {asked.group(1).split(',')[0].strip()}\n" if asked else ""
                kind, reply = (
                    "round",
                    (
                        f"Round {number - 1}: team A pointed at growth, team B at losses. {question}\n"
                        f"{pick}VERDICT: CONTINUE"
                    ),
                )
        elif role in ("pro", "con"):
            points = PRO if role == "pro" else CON
            kind, reply = "argument", f"{points[(number - 1) % len(points)]} (point {number})"
        else:
            kind, reply = "unknown", "I have nothing to add."
        with self._lock:
            self.calls.append(Call(time.monotonic(), agent, number, kind))
        return reply


@dataclass
class Hold:
    """Hold the ``number``-th request of ``agent`` until ``release()``; ``held`` is set when it arrives.

    Requests are counted, not matched by content: every other request of ``agent`` is answered at once,
    including a second request for the same turn (a standby redoing it after the sender was killed).
    ``followed`` is set when the first request after the held one arrives. ``seen`` counts them all.
    """

    agent: str
    number: int
    held: threading.Event = field(default_factory=threading.Event)
    followed: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    held_at: float | None = None
    followed_at: float | None = None
    released_at: float | None = None
    seen: int = 0

    def release(self) -> None:
        self.released_at = time.monotonic()
        self.released.set()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DebateModel:
    """The fake in a background thread: ``start()`` -> ``base_url``; ``stop()`` at teardown."""

    def __init__(
        self, agents: Mapping[str, tuple[str, str]], hold: Hold | None = None, host: str = "127.0.0.1"
    ) -> None:
        """``host``: where it listens (the test bed's node address for pods on the real node)."""
        self.state = DebateState(agents)
        self.hold = hold
        self.host = host
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="debate-model", daemon=True)
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _hold(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        hold = self.hold
        if hold is not None and request.path.endswith("/chat/completions"):
            body = json.loads(await request.read())  # aiohttp keeps the body for the handler
            if self.state.speaker(body) == hold.agent:
                hold.seen += 1
                if hold.seen == hold.number:
                    hold.held_at = time.monotonic()
                    hold.held.set()
                    await asyncio.get_running_loop().run_in_executor(None, hold.released.wait, 120)
                elif hold.seen == hold.number + 1:
                    hold.followed_at = time.monotonic()
                    hold.followed.set()
        return await handler(request)

    async def _start(self) -> str:
        app = create_fake_app(self.state)
        app.middlewares.append(self._hold)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://{self.host}:{port}/v1"

    def start(self) -> DebateModel:
        self._thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.release()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

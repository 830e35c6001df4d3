"""``stoa conversations start|list|follow`` against the real API and product: a user with a token and no
kubectl or database access starts a debate, follows it to the end, lists it; a viewer is refused."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid

from tests.e2e.web.conftest import Users
from tests.e2e.web.harness import ApiServer
from tests.e2e.web.stack import Stack, await_for


async def stoa(api: ApiServer, token: str, namespace: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stoa_cli.main",
        "conversations",
        "--server",
        api.url,
        "--token",
        token,
        "-n",
        namespace,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_start_follow_and_list_through_the_api(
    api_server: ApiServer, *, stack: Stack, team: str, users: Users
) -> None:
    name = f"cli-{uuid.uuid4().hex[:5]}"
    code, out, err = await stoa(
        api_server,
        users.editor,
        team,
        "start",
        name,
        "--topic",
        "AI and jobs",
        "-p",
        "moderator:moderator",
        "-p",
        "team-a:pro",
        "-p",
        "team-b:con",
        "--moderator",
        "moderator",
        "--max-rounds",
        "2",
        "--follow",
    )
    assert code == 0, out + err
    assert f"conversation {team}/{name} created" in out
    seqs = [int(s) for s in re.findall(r"^\[\s*(\d+)\] ", out, re.MULTILINE)]
    assert seqs == list(range(1, 8)), out
    assert "--- phase Succeeded" in out
    assert "VERDICT: END" in out

    code, again, err = await stoa(api_server, users.viewer, team, "follow", name)
    assert code == 0, again + err
    assert [int(s) for s in re.findall(r"^\[\s*(\d+)\] ", again, re.MULTILINE)] == seqs

    async def listed() -> list[str] | None:
        code, listing, err = await stoa(api_server, users.viewer, team, "list")
        assert code == 0, err
        row = next(line for line in listing.splitlines() if line.startswith(name))
        return row.split()[1:3] if row.split()[1] == "Succeeded" else None

    # `list` shows the resources' status: the operator's copy of the runtime's phase follows within its
    # sync interval (follow read the runtime's own record).
    assert await await_for(listed, 60, f"{name} Succeeded in the list", interval=2) == ["Succeeded", "7/20"]

    code, out, err = await stoa(
        api_server, users.viewer, team, "start", f"{name}-x", "--topic", "no", "-p", "team-a"
    )
    assert code == 2
    assert "403" in err
    assert "may not create conversations.stoa.dev" in err
    assert stack.get("conversations", f"{name}-x") is None
    code, out, err = await stoa(api_server, users.nobody, team, "follow", name)
    assert code == 2
    assert "may not get conversations.stoa.dev" in err

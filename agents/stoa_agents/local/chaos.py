"""``stoa run --kill-active-every N``: kill -9 the active replica of the speaking agent every N turns, to
watch a standby take over mid-conversation."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from stoa_agents.control import agent_status
from stoa_agents.local.fleet import Fleet
from stoa_agents.store import repo
from stoa_agents.turns.policy import speaker_for
from stoa_api.conversation import ConversationSpec


@dataclass
class Chaos:
    every: int  # 0: off
    kills: int = 0
    last_kill_turns: int = 0

    def due(self, total_turns: int) -> bool:
        return self.every > 0 and total_turns - self.last_kill_turns >= self.every

    async def strike(
        self, db: asyncpg.Pool, fleet: Fleet, name: str, spec: ConversationSpec, total_turns: int
    ) -> str | None:
        """Kill the active replica of the agent speaking next in conversation ``name``; its pod name."""
        conv = await repo.find_conversation(db, name)
        if conv is None:
            return None
        speaker = speaker_for(spec, conv.next_seq, await repo.load_turns(db, conv.id))
        active = (await agent_status(db, speaker)).active_pod
        if not active or not fleet.kill(active):
            return None
        self.kills += 1
        self.last_kill_turns = total_turns
        print(f"      (chaos: kill -9 {active}, the active replica of {speaker})", flush=True)
        return active

"""``stoa run examples/debate`` end to end against given services and a fake model, with chaos kills:
what ``make demo`` does, minus the embedded model."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_testing.fake_provider import start_fake_provider
from tests.integration.runtime.harness import distinct_replies

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
async def test_stoa_run_debate_with_takeovers(
    postgres: PostgresServer, rabbitmq: RabbitMQServer, tmp_path: Path
) -> None:
    fake = await start_fake_provider(replies=distinct_replies())
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stoa_cli.main",
            "run",
            str(ROOT / "examples" / "debate"),
            "--postgres-url",
            postgres.dsn,
            "--rabbitmq-url",
            rabbitmq.url,
            "--model-url",
            fake.base_url,
            "--model-name",
            "fake-model",
            "--kill-active-every",
            "6",
            "--work-dir",
            str(tmp_path),
            "--timeout",
            "150",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 200)
    finally:
        await fake.close()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "Conversation ai-jobs-debate: Succeeded - Completed 8 rounds" in text
    assert "turns 25" in text
    assert "[ 25] moderator (moderator)" in text
    assert "chaos: kill -9" in text
    assert "Gateway http://" in text  # agents went through the Stoa gateway with the debate ModelPolicy

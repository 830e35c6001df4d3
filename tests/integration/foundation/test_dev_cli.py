"""`stoa dev services up|down` starts real services that outlive the command and stops them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import aio_pika
import asyncpg

from stoa_devenv.procs import port_open


def _stoa(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOA_STATE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "stoa_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_dev_services_up_json_then_down(tmp_path: Path) -> None:
    up = _stoa(["dev", "services", "up", "--json"], tmp_path)
    assert up.returncode == 0, up.stderr
    urls = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        conn = await asyncpg.connect(urls["postgres_url"])
        assert await conn.fetchval("SELECT 41 + 1") == 42
        await conn.close()
        connection = await aio_pika.connect(urls["rabbitmq_url"])
        await connection.close()
        again = _stoa(["dev", "services", "up", "--json"], tmp_path)
        assert json.loads(again.stdout.strip().splitlines()[-1]) == urls, "up twice must reuse the services"
    finally:
        down = _stoa(["dev", "services", "down"], tmp_path)
    assert down.returncode == 0, down.stderr
    for url in urls.values():
        port = urlparse(url).port
        assert port is not None
        assert not port_open(port), f"{url} still listening after down"
    status = _stoa(["dev", "services", "status"], tmp_path)
    assert status.returncode == 1
    assert "No local services" in status.stdout

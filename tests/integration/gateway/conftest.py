"""Fixtures: in-process fake providers and gateways on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stoa_testing.fake_provider import RunningFake, start_fake_provider
from stoa_testing.gateway import FakeFactory, GatewayFactory


@pytest.fixture
async def fake() -> AsyncIterator[FakeFactory]:
    started: list[RunningFake] = []

    async def factory(**kwargs: Any) -> RunningFake:
        running = await start_fake_provider(**kwargs)
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path)
    yield factory
    for gw in factory.running:
        await gw.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session

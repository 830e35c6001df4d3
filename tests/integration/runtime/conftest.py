"""Fixtures of the runtime integration tests: a fake model server (0 latency) and a log directory."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stoa_testing.fake_provider import RunningFake, start_fake_provider
from tests.integration.runtime.harness import distinct_replies


@pytest.fixture(scope="session")
async def fake_model() -> AsyncIterator[RunningFake]:
    fake = await start_fake_provider(replies=distinct_replies())
    yield fake
    await fake.close()


@pytest.fixture(scope="session")
def runtime_logs() -> Path:
    return Path(tempfile.mkdtemp(prefix="stoa-runtime-tests-"))

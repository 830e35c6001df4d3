"""Session-wide real services. A missing component fails the test with a message; it is never skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_devenv.redis import RedisServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server (fsync on, so restart tests are honest). ``.dsn``, ``.restart()``."""
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node, started once per session (~6-13 s). ``.url``, ``.restart()``, ``.kill()``."""
    server = RabbitMQServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private Redis (no persistence), started once per session (~0.1 s). ``.url``, ``.kill()``."""
    server = RedisServer().start()
    yield server
    server.destroy()

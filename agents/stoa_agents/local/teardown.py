"""The one owner of what ``stoa run`` starts: each part registers how to stop it as it starts, and the
owner stops them all, in reverse order, exactly once, however the run ends (success, failure, Ctrl-C, a
part that failed to start half-way). A stop that fails is reported and the others still run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import yaml

from stoa_agents.local.embedded import MODEL_ALIAS, start_embedded_model
from stoa_agents.local.wiring import local_gateway_config
from stoa_devenv.postgres import PostgresServer
from stoa_devenv.rabbitmq import RabbitMQServer
from stoa_gateway.policy import ModelPolicySpec
from stoa_gateway.server import start_gateway

log = logging.getLogger("stoa.agents.local")
T = TypeVar("T")


class Teardown:
    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def own(self, what: str, stop: Callable[[], Awaitable[None]]) -> None:
        self._stops.append((what, stop))

    def own_sync(self, what: str, stop: Callable[[], object]) -> None:
        """A blocking stop (a process, a server): run in a thread."""

        async def run() -> None:
            await asyncio.to_thread(stop)

        self.own(what, run)

    async def close(self) -> None:
        while self._stops:
            what, stop = self._stops.pop()
            try:
                await stop()
            except Exception as exc:  # report, and stop the rest anyway
                print(f"Could not stop {what}: {exc!r}", flush=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.close())


def started(result: T | BaseException) -> T:
    """One result of ``asyncio.gather(..., return_exceptions=True)`` over starts: waiting for all of them
    means each that succeeded has registered its stop before the first failure is raised here."""
    if isinstance(result, BaseException):
        raise result
    return result


async def postgres(owner: Teardown, url: str | None) -> str:
    if url:
        return url
    print("Starting PostgreSQL ...", flush=True)
    server = await asyncio.to_thread(lambda: PostgresServer(fsync=False).start())
    owner.own_sync("PostgreSQL", server.destroy)
    return server.dsn


async def rabbitmq(owner: Teardown, url: str | None) -> str:
    if url:
        return url
    print("Starting RabbitMQ (~10 s) ...", flush=True)
    server = await asyncio.to_thread(lambda: RabbitMQServer().start())
    owner.own_sync("RabbitMQ", server.destroy)
    return server.url


async def model(owner: Teardown, url: str | None, name: str | None, work: Path) -> tuple[str, str]:
    """The model's base URL and name: ``url`` as given, or the embedded SmolLM2 started here."""
    if url:
        return url, name or "default"
    print("Starting the embedded model SmolLM2-135M (llama.cpp) ...", flush=True)
    embedded = await asyncio.to_thread(start_embedded_model, work / "model.log")
    owner.own_sync("the embedded model", embedded.stop)
    return embedded.base_url, MODEL_ALIAS


async def gateway(
    owner: Teardown, policies: dict[str, ModelPolicySpec], model_url: str, model_name: str, work: Path
) -> str:
    """The Stoa gateway serving ``policies``, every target pointed at the model; its base URL."""
    config = work / "gateway.yaml"
    text = yaml.safe_dump(local_gateway_config(policies, model_url, model_name))
    await asyncio.to_thread(config.write_text, text)
    running = await start_gateway(config)
    owner.own("the gateway", running.close)
    print(f"Gateway {running.url} -> {model_url} (ModelPolicies: {', '.join(policies)})", flush=True)
    return str(running.base_url)

"""A namespace's gateway replicas: where they are and what they report (status, audit records).

Replicas are the ready endpoints of the gateway Service's EndpointSlices (read with the API's own service
account), or fixed URLs (``STOA_API_GATEWAYS``, for runs without Kubernetes networking). Audit records
are fetched at most once per ``gateway_poll_seconds`` per namespace, whatever the number of open streams,
and kept per gateway process (its ``instance``) for the streams to read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from stoa_gateway.audit import DEFAULT_KEEP
from stoa_web.events import AuditPage
from stoa_web.kube import Kube, KubeError
from stoa_web.settings import ApiSettings

log = logging.getLogger("stoa.api.gateways")
PAGE = 500
FORGET_SECONDS = 600.0


@dataclass
class _Held:
    """What the API holds of one gateway process's audit records."""

    instance: str
    oldest: int  # first seq the gateway process itself still held when last asked
    last: int = 0
    records: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=DEFAULT_KEEP)
    )
    seen_at: float = field(default_factory=time.monotonic)

    def page(self) -> AuditPage:
        first = self.records[0]["seq"] if self.records else self.last + 1
        return AuditPage(oldest=max(self.oldest, int(first)), records=list(self.records))


@dataclass
class _Feed:
    held: dict[str, _Held] = field(default_factory=dict)  # replica URL -> records
    retired: dict[str, _Held] = field(default_factory=dict)  # instance -> records of a process now gone
    refreshed_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def endpoint_urls(slices: list[dict[str, Any]], port_name: str) -> list[str]:
    """Ready endpoints of EndpointSlices as ``http://address:port`` (pure)."""
    urls = []
    for item in slices:
        ports = [p for p in item.get("ports") or [] if p.get("name") == port_name and p.get("port")]
        if not ports:
            continue
        port = int(ports[0]["port"])
        for endpoint in item.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                host = f"[{address}]" if ":" in address else address
                urls.append(f"http://{host}:{port}")
    return sorted(set(urls))


class Gateways:
    def __init__(self, kube: Kube, settings: ApiSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.fixed = settings.gateway_map()
        self._session: aiohttp.ClientSession | None = None
        self._replicas: dict[str, tuple[float, list[str]]] = {}
        self._status: dict[str, tuple[float, tuple[list[dict[str, Any]], list[str]]]] = {}
        self._feeds: dict[str, _Feed] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def replicas(self, namespace: str) -> list[str]:
        if namespace in self.fixed:
            return self.fixed[namespace]
        cached = self._replicas.get(namespace)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        selector = quote(f"kubernetes.io/service-name={self.settings.gateway_service}")
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices?labelSelector={selector}"
        try:
            found = await self.kube.request("GET", path)
            urls = endpoint_urls(found.get("items") or [], self.settings.gateway_port_name)
        except KubeError as exc:
            log.warning("Gateway endpoints unreadable namespace=%s error=%s", namespace, exc.message)
            urls = []
        self._replicas[namespace] = (now + self.settings.gateway_poll_seconds, urls)
        return urls

    async def _get(self, url: str) -> dict[str, Any] | None:
        assert self._session is not None
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.debug("Gateway unreachable url=%s error=%r", url, exc)
            return None
        return data if isinstance(data, dict) else None

    async def status(self, namespace: str) -> tuple[list[dict[str, Any]], list[str]]:
        """``/v1/stoa/status`` of every replica that answers, and the URLs of those that do not."""
        urls = await self.replicas(namespace)
        replies = await asyncio.gather(*(self._get(f"{u}/v1/stoa/status") for u in urls))
        return [r for r in replies if r is not None], [
            u for u, r in zip(urls, replies, strict=True) if r is None
        ]

    async def audit(self, namespace: str, *, fresh: bool = False) -> dict[str, AuditPage]:
        """The audit records the API holds for each gateway process of the namespace (refreshed at most
        every ``gateway_poll_seconds`` unless ``fresh``)."""
        feed = self._feeds.setdefault(namespace, _Feed())
        async with feed.lock:
            now = time.monotonic()
            if fresh or now - feed.refreshed_at >= self.settings.gateway_poll_seconds:
                urls = await self.replicas(namespace)
                await asyncio.gather(*(self._refresh(feed, url) for url in urls))
                feed.refreshed_at = time.monotonic()
                for url in [u for u, h in feed.held.items() if now - h.seen_at > FORGET_SECONDS]:
                    gone = feed.held.pop(url)
                    feed.retired[gone.instance] = gone
                for instance in [i for i, h in feed.retired.items() if now - h.seen_at > FORGET_SECONDS]:
                    del feed.retired[instance]
            return {h.instance: h.page() for h in (*feed.retired.values(), *feed.held.values())}

    async def _refresh(self, feed: _Feed, url: str) -> None:
        for _ in range(DEFAULT_KEEP // PAGE + 1):
            held = feed.held.get(url)
            after = held.last if held is not None else 0
            page = await self._get(f"{url}/v1/stoa/audit?after={after}&limit={PAGE}")
            if page is None:
                return
            instance = str(page.get("instance") or "")
            if held is None or held.instance != instance:  # first contact, or the process restarted
                if held is not None:
                    feed.retired[held.instance] = held
                held = _Held(instance=instance, oldest=int(page.get("oldest") or 1))
                feed.held[url] = held
                if after:
                    continue  # ask the new process from its start
            held.oldest = int(page.get("oldest") or 1)
            held.seen_at = time.monotonic()
            records = [r for r in page.get("records") or [] if isinstance(r, dict)]
            held.records.extend(records)
            if records:
                held.last = int(records[-1].get("seq") or held.last)
            if len(records) < PAGE:
                return

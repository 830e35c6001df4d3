"""Limits shared by every gateway replica through Redis (or Valkey): leased buckets and a shared spend.

The request path takes from this replica's leased allowance (``stoa_gateway.leases``) and only goes to
Redis when the allowance cannot cover a call; a background task leases ahead, returns what sits idle,
charges corrections, pushes spend, and heartbeats this replica into the member set whose size is the
"ready replicas" of the fallback. When Redis cannot be reached, each replica falls back to its share of
every limit (limit / replicas last seen, else the configured count) until Redis answers again; then it
hands back what it consumed meanwhile (everything, when Redis came back without its data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from stoa_gateway.costs import utc_day
from stoa_gateway.leases import BucketOp, Lease, sync_ops
from stoa_gateway.limiter import Bucket
from stoa_gateway.limits import MAX_KEYS, Demand, Limits, LocalLimits

log = logging.getLogger("stoa.gateway.limits")

SYNC_SECONDS = 0.2
RECONNECT_SECONDS = 1.0
CALL_TIMEOUT_SECONDS = 0.3  # a call waiting for a lease waits no longer
SYNC_TIMEOUT_SECONDS = 1.0  # the background task: no answer within this long means unreachable
MEMBER_TTL_SECONDS = 3.0
SPEND_TTL_SECONDS = 2 * 86400
SETTLE_SECONDS = RECONNECT_SECONDS + 0.5
BEAT_SECONDS = 0.5  # heartbeat, epoch check and the others' spend at least this often
MIN_GAP_SECONDS = 0.02  # a woken sync waits this long at least: one round of leases serves many calls

# KEYS: epoch, members, buckets...; ARGV: epoch candidate, replica id ('' = none), member TTL, then per
# bucket: capacity, amount, floor, mode ('l' lease up to amount leaving floor, 'c' charge; refund < 0).
# Returns epoch, members (-1 without heartbeat), then per bucket: granted, level (strings: floats).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local members = -1
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], now, ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
  members = redis.call('ZCARD', KEYS[2])
end
local out = {epoch, tostring(members)}
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 4
  local cap = tonumber(ARGV[a])
  local amount = tonumber(ARGV[a + 1])
  local floor = tonumber(ARGV[a + 2])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  level = math.min(cap, level + math.max(0, now - ts) * cap / 60)
  local granted = amount
  if ARGV[a + 3] == 'l' then
    if amount > cap - floor and level >= cap then
      granted = amount
    else
      granted = math.max(0, math.min(amount, level - floor))
    end
    level = level - granted
  else
    level = math.min(cap, level - amount)
  end
  redis.call('HSET', KEYS[i], 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(((cap - level) * 60 / cap + 60) * 1000))
  out[#out + 1] = tostring(granted)
  out[#out + 1] = tostring(level)
end
return out
"""


class SharedLimits(Limits):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "stoa",
        replicas: int = 1,
        replica_id: str | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.replica_id = replica_id or secrets.token_hex(6)
        self.configured = max(1, replicas)  # the Deployment's replicas: the share is never larger
        self.replicas = self.configured  # ready replicas: the last member count seen
        self.connected = False
        self.reason = "not connected yet"
        self.since = time.time()
        self.epoch: str | None = None
        self.settle_until: float | None = None  # reconnected: still at the share until then
        self.leases: dict[str, Lease] = {}
        self.fallback = LocalLimits(self.configured, "shared limit backend unreachable")
        self.spend_seen: dict[str, tuple[str, float]] = {}  # policy -> (day, total in Redis)
        self.spend_unsynced: dict[tuple[str, str], float] = {}  # (policy, day) -> USD not pushed yet
        self._wake = asyncio.Event()
        self._last_beat = self._last_spend = 0.0
        self._task: asyncio.Task[None] | None = None
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=SYNC_TIMEOUT_SECONDS,
            socket_connect_timeout=SYNC_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=True,
        )
        self._script = self._redis.register_script(SCRIPT)

    @property
    def shared(self) -> bool:  # type: ignore[override]
        return self.connected

    # ---- keys
    def _key(self, name: str) -> str:
        return f"{{{self.prefix}}}:{name}"  # one hash tag: every key of a gateway on one cluster slot

    def _lease(self, demand: Demand, now: float) -> Lease:
        lease = self.leases.get(demand.key)
        if lease is None or lease.capacity != demand.capacity:
            lease = self.leases[demand.key] = Lease(demand.capacity, created=now)
            while len(self.leases) > MAX_KEYS:
                self.leases.pop(next(iter(self.leases)))
        return lease

    # ---- the request path
    def wait(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        if not self.connected:
            return self.fallback.wait(demands, now, reserve)
        waits = [0.0]
        for d in demands:
            waits.append(self._lease(d, now).wait(d.amount, reserve * d.capacity, now))
        return max(waits)

    async def take(self, demands: Sequence[Demand], now: float, reserve: float = 0.0) -> float:
        if not demands:
            return 0.0
        if not self.connected:
            return self._take_fallback(demands, now, reserve)
        leases = [self._lease(d, now) for d in demands]
        for d, lease in zip(demands, leases, strict=True):
            if reserve > 0:
                lease.floor = reserve * d.capacity
        short = [(d, lease) for d, lease in zip(demands, leases, strict=True) if lease.allowance < d.amount]
        if short:
            estimate = max(lease.wait(d.amount, reserve * d.capacity, now) for d, lease in short)
            if estimate > 0:
                return estimate
            ops = [
                BucketOp(d.key, d.capacity, lease.chunk(d.amount, now), reserve * d.capacity)
                for d, lease in short
            ]
            try:
                await self._run(ops, heartbeat=False, limit_seconds=CALL_TIMEOUT_SECONDS)
            except (RedisError, OSError, TimeoutError):
                # Only the sync task decides that Redis is down (one slow answer is no outage); this
                # call is refused for now, the next ones get the fallback share if Redis stays away.
                return RECONNECT_SECONDS
            waits = [lease.wait(d.amount, reserve * d.capacity, now) for d, lease in short]
            if any(lease.allowance < d.amount for d, lease in short):
                return max([*waits, 60.0 / max(d.capacity for d, _ in short)])
        for d, lease in zip(demands, leases, strict=True):
            lease.consume(d.amount, now, self.replicas)
        if any(lease.needs_more(now) for lease in leases):
            self._wake.set()
        return 0.0

    def _take_fallback(self, demands: Sequence[Demand], now: float, reserve: float) -> float:
        wait = self.fallback.take_now(demands, now, reserve)
        if wait == 0:
            for d in demands:
                self._lease(d, now).record_outage(d.amount, now, self.replicas)
        return wait

    def charge(self, demand: Demand, now: float) -> None:
        lease = self._lease(demand, now)
        if self.connected:
            lease.consume(
                demand.amount, now, self.replicas
            )  # a debt is charged, a refund returned, by the next sync
        else:
            self.fallback.charge(demand, now)
            lease.record_outage(demand.amount, now, self.replicas)

    def spent(self, policy: str, epoch: float) -> float:
        day = utc_day(epoch)
        seen_day, total = self.spend_seen.get(policy, (day, 0.0))
        seen = total if seen_day == day else 0.0
        unsynced = self.spend_unsynced.get((policy, day), 0.0)
        if self.connected:
            return seen + unsynced
        return seen + unsynced * max(self.replicas, self.configured)  # its share of what is left

    def add_spend(self, policy: str, epoch: float, usd: float) -> None:
        key = (policy, utc_day(epoch))
        self.spend_unsynced[key] = self.spend_unsynced.get(key, 0.0) + usd
        if self.connected:
            self._wake.set()

    def status(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "shared": self.connected,
            "replicas": self.replicas,
            "reason": "" if self.connected else self.reason,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
        }

    # ---- Redis
    async def _run(
        self, ops: Sequence[BucketOp], *, heartbeat: bool, limit_seconds: float = SYNC_TIMEOUT_SECONDS
    ) -> str:
        """Apply ``ops`` in one script call and fold the replies into the leases; returns the epoch."""
        keys = [self._key("epoch"), self._key("replicas"), *(self._key(f"bucket:{op.key}") for op in ops)]
        args: list[Any] = [secrets.token_hex(8), self.replica_id if heartbeat else "", MEMBER_TTL_SECONDS]
        for op in ops:
            args += [op.capacity, repr(float(op.amount)), repr(float(op.floor)), "l" if op.lease else "c"]
        async with asyncio.timeout(limit_seconds):
            reply = await self._script(keys=keys, args=args)
        now = time.monotonic()
        epoch, members = str(reply[0]), int(reply[1])
        if members > 0:
            self.replicas = members
        for i, op in enumerate(ops):
            granted, level = float(reply[2 + 2 * i]), float(reply[3 + 2 * i])
            lease = self.leases.get(op.key)
            if lease is None:
                continue
            if op.lease:
                lease.allowance += granted
            lease.seen_level, lease.seen_at = level, now
        return epoch

    async def _sync(self) -> None:
        now = time.monotonic()
        if not self.connected or now - self._last_beat >= BEAT_SECONDS:
            epoch = await self._run([], heartbeat=True)
            self._last_beat = now
            if self.connected and self.epoch is not None and epoch != self.epoch:
                self._down(RuntimeError("the shared limit backend lost its state"))
            if not self.connected:
                await self._reconnect(epoch, now)
                if not self.connected:
                    return
        ops, handed = [], []
        for key, lease in list(self.leases.items()):
            if lease.forgotten(now):
                del self.leases[key]
                continue
            op, back = sync_ops(key, lease, now)
            if op is not None:
                ops.append(op)
                handed.append((lease, back))
        if ops:
            await self._run(ops, heartbeat=False)
            for lease, back in handed:
                lease.allowance -= back
        if any(self.spend_unsynced.values()) or now - self._last_spend >= BEAT_SECONDS:
            await self._push_spend()
            self._last_spend = now

    async def _reconnect(self, epoch: str, now: float) -> None:
        """Back after an outage: hand back what this replica consumed meanwhile, keep to its share a little
        longer (until every replica has handed back its part: they retry each second), then share again."""
        if self.epoch is None and not any(lease.outage for lease in self.leases.values()):
            self.epoch = epoch  # first contact, nothing used meanwhile: nothing to hand back
            self._up()
            return
        if self.settle_until is None:
            lost = self.epoch is not None and epoch != self.epoch
            await self._hand_back(lost=lost, now=now)
            self.epoch = epoch
            self.settle_until = now + SETTLE_SECONDS
            self.reason = "reconnected, handing back what each replica used while Redis was unreachable"
            return
        if now < self.settle_until:
            return
        await self._hand_back(lost=False, now=now)  # what was used while settling
        self.settle_until = None
        for lease in self.leases.values():
            lease.allowance = 0.0  # what was left of it was part of the fallback share
        self._up()

    async def _hand_back(self, *, lost: bool, now: float) -> None:
        """Charge what this replica consumed while unreachable (all of it when Redis lost its data)."""
        ops = []
        for key, lease in self.leases.items():
            owed = lease.owed(lease.usage if lost else lease.outage, now, self.replicas)
            if owed > 0:
                ops.append(BucketOp(key, lease.capacity, owed, lease=False))
        if ops:
            await self._run(ops, heartbeat=False)
        for lease in self.leases.values():
            lease.outage = None
        if lost:
            log.warning(
                "Shared limit backend lost its state, charged back this replica's usage keys=%d", len(ops)
            )

    async def _push_spend(self) -> None:
        pending = {k: v for k, v in self.spend_unsynced.items() if v}
        policies = sorted({policy for policy, _ in pending} | set(self.spend_seen))
        day = utc_day(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for (policy, spend_day), usd in pending.items():
            key = self._key(f"spend:{policy}:{spend_day}")
            pipe.incrbyfloat(key, usd)
            pipe.expire(key, SPEND_TTL_SECONDS)
        for policy in policies:
            pipe.get(self._key(f"spend:{policy}:{day}"))
        async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
            replies = await pipe.execute()
        for pushed, usd in pending.items():
            self.spend_unsynced[pushed] -= usd
        totals = replies[2 * len(pending) :]
        for policy, total in zip(policies, totals, strict=True):
            self.spend_seen[policy] = (day, float(total or 0.0))

    def _down(self, exc: BaseException) -> None:
        self.settle_until = None
        if not self.connected:
            return
        now = time.monotonic()
        self.connected = False
        why = f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {SYNC_TIMEOUT_SECONDS:g}s"
        self.reason = f"cannot reach {self._safe_url()}: {why}"[:300]
        self.since = time.time()
        divisor = max(self.replicas, self.configured)
        self.fallback = LocalLimits(divisor, self.reason)
        for key, lease in self.leases.items():
            share = lease.capacity / divisor
            seen = lease.seen_level if lease.seen_level is not None else float(lease.capacity)
            level = min(share, max(0.0, lease.allowance) + max(0.0, seen) / divisor)
            self.fallback.buckets[key] = Bucket(level, now)
        log.error(
            "Shared limits unreachable, each replica holds its share replicas=%d reason=%s",
            self.replicas,
            self.reason,
        )

    def _up(self) -> None:
        self.connected = True
        self.reason = ""
        self.since = time.time()
        log.info("Shared limits connected url=%s replicas=%d", self._safe_url(), self.replicas)

    def _safe_url(self) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"

    async def _loop(self) -> None:
        while True:
            try:
                await self._sync()
            except (RedisError, OSError, TimeoutError) as exc:
                self._mark_unreachable(exc)
                with contextlib.suppress(RedisError, OSError):  # no stale pooled connection after a restart
                    await self._redis.connection_pool.disconnect()
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            except Exception:  # a dead sync task would freeze every lease
                log.exception("Shared limits sync failed")
            await asyncio.sleep(MIN_GAP_SECONDS)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_SECONDS - MIN_GAP_SECONDS):
                    await self._wake.wait()

    def _mark_unreachable(self, exc: BaseException) -> None:
        if self.connected:
            self._down(exc)
            return
        self.settle_until = None  # a reconnect that failed half way starts over
        reason = f"cannot reach {self._safe_url()}: {type(exc).__name__}: {exc}"[:300]
        if reason != self.reason:
            self.reason = self.fallback.reason = reason
            log.error("Shared limits unreachable replicas=%d reason=%s", self.replicas, reason)

    async def start(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._sync()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connected:  # give back what this replica holds and leave the member set
            ops = [
                BucketOp(key, lease.capacity, -lease.allowance, lease=False)
                for key, lease in self.leases.items()
                if lease.allowance
            ]
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._run(ops, heartbeat=False)
                await self._redis.zrem(self._key("replicas"), self.replica_id)
        await self._redis.aclose()

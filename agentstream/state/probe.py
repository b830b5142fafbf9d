"""Is Redis reachable? A :class:`~agentstream.observability.health.Probe` fed by a periodic PING.

:class:`RedisProbe` PINGs every ``interval_s`` with a ``timeout_s`` deadline and keeps the latest
:class:`~agentstream.observability.health.ProbeStatus`: readiness reads it, and anything that
must react to an outage (an intake gate) can ``await wait_until(ok=...)`` or register
``on_change`` callbacks, which run on the event loop when the state flips. The first failure
marks Redis down (a probe's deadline is already a second or so); the first success marks it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from agentstream.observability.health import ProbeStatus
from agentstream.observability.logging import get_logger
from agentstream.state.redis import RedisClient

log = get_logger(__name__)

ChangeCallback = Callable[[ProbeStatus], None]


class RedisProbe:
    """The latest known reachability of one Redis client (single server or cluster)."""

    name = "redis"

    def __init__(self, redis: RedisClient, *, interval_s: float, timeout_s: float) -> None:
        self._redis = redis
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._status = ProbeStatus(ok=False, detail="not checked yet")
        self._callbacks: list[ChangeCallback] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        """Consecutive failed PINGs."""

    def status(self) -> ProbeStatus:
        return self._status

    @property
    def ok(self) -> bool:
        return self._status.ok

    def on_change(self, callback: ChangeCallback) -> None:
        """``callback(status)`` after every flip between reachable and unreachable."""
        self._callbacks.append(callback)

    async def check(self) -> ProbeStatus:
        """PING once now and record the outcome."""
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._redis.ping(), self.timeout_s)
        except TimeoutError:
            await self._record(False, f"PING timed out after {self.timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001 - any failure to answer means unreachable
            await self._record(False, f"PING failed: {type(exc).__name__}")
        else:
            await self._record(True, f"PING {(time.perf_counter() - started) * 1000:.1f} ms")
        return self._status

    async def wait_until(self, ok: bool) -> ProbeStatus:
        """Wait until the probe says ``ok`` (returns at once if it already does)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._status.ok is ok)
            return self._status

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def _record(self, ok: bool, detail: str) -> None:
        now = time.time()
        previous = self._status
        flipped = previous.ok is not ok or previous.checked_at is None
        self.failures = 0 if ok else self.failures + 1
        self._status = ProbeStatus(
            ok=ok, detail=detail, since=now if flipped else previous.since, checked_at=now
        )
        if not flipped:
            return
        if previous.checked_at is not None or not ok:
            log_fn = log.info if ok else log.warning
            log_fn("redis reachable" if ok else "redis unreachable", detail=detail)
        for callback in self._callbacks:
            callback(self._status)
        async with self._changed:
            self._changed.notify_all()

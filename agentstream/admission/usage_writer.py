"""Usage is written behind, in batches, and never dropped.

After a model call its actual usage (tokens, cost) must be booked: the token windows replace
the call's estimate with it and the tenant's day totals grow. Booking it on the call's own path
costs a Redis round trip per call, and under CPU starvation or a Redis blip a booking that timed
out was lost, so budgets undercounted exactly when the system was overloaded.

Here a call's settlement is queued and the worker books every queued settlement of a tenant in
one script call (the tenant's keys share one Redis Cluster hash tag), ``flush_s`` after the
first one was queued (or at once when ``max_batch`` are waiting). A batch that fails stays
queued, ahead of newer ones, and is tried again with backoff: carried to the next write, never
dropped. Stopping the worker flushes what is queued (for up to ``close_timeout_s``).

What this costs: the windows and day totals lag the calls by up to ``flush_s`` (50 ms by
default), and a worker killed with ``kill -9`` loses the settlements of its last ``flush_s``
(the reservation made before the call stays booked, so the estimate counts instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agentstream.admission import metrics
from agentstream.admission.rate_limit import Settlement, SlidingWindowLimiter
from agentstream.observability.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")
Store = Callable[[Awaitable[list[int]]], Awaitable[list[int]]]
_BACKOFF_S = (0.05, 2.0)


class UsageWriter:
    def __init__(
        self,
        limiter: SlidingWindowLimiter,
        *,
        store: Store,
        flush_s: float = 0.05,
        max_batch: int = 200,
    ) -> None:
        self._limiter = limiter
        self._store = store
        self._flush_s = flush_s
        self._max_batch = max_batch
        self._pending: OrderedDict[str, list[Settlement]] = OrderedDict()  # by tenant
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._failing = False
        self._sending = 0
        self.booked = 0
        self.failed_batches = 0

    @property
    def pending(self) -> int:
        """Settlements not booked yet: queued, or in a batch on its way."""
        return sum(len(v) for v in self._pending.values()) + self._sending

    def add(self, tenant_id: str, settlement: Settlement) -> None:
        """Queue one call's usage; it is booked within about ``flush_s``."""
        self._pending.setdefault(tenant_id, []).append(settlement)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        if len(self._pending[tenant_id]) >= self._max_batch:
            self._wake.set()

    async def _run(self) -> None:
        pause = _BACKOFF_S[0]
        while self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_s):
                    await self._wake.wait()
            self._wake.clear()
            if await self.flush():
                pause = _BACKOFF_S[0]
                continue
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, _BACKOFF_S[1])

    async def flush(self) -> bool:
        """Book everything queued now; True when all of it was booked."""
        batches: list[tuple[str, list[Settlement]]] = []
        for tenant in list(self._pending):
            entries = self._pending.pop(tenant)
            for i in range(0, len(entries), self._max_batch):
                batches.append((tenant, entries[i : i + self._max_batch]))
        if not batches:
            return True
        results = await asyncio.gather(*(self._book(t, b) for t, b in batches))
        ok = all(results)
        if ok and self._failing:
            log.warning("admission usage booked again after a store outage")
        self._failing = not ok
        return ok

    async def _book(self, tenant: str, batch: list[Settlement]) -> bool:
        self._sending += len(batch)
        try:
            await self._store(self._limiter.settle_many(batch))
        except BaseException as exc:  # kept queued and tried again: never dropped
            self._sending -= len(batch)
            self._requeue(tenant, batch)
            if not isinstance(exc, Exception):  # cancelled (the worker stops): aclose books it
                raise
            self.failed_batches += 1
            metrics.store_unavailable("settle", "deferred")
            if not self._failing:
                log.warning(
                    "usage not booked yet: admission store unavailable; kept for the next write",
                    error=type(exc).__name__,
                    queued=len(batch),
                )
            return False
        self._sending -= len(batch)
        self.booked += len(batch)
        return True

    def _requeue(self, tenant: str, batch: list[Settlement]) -> None:
        """Ahead of what was queued meanwhile, so a call's usage is booked in order."""
        newer = self._pending.pop(tenant, [])
        self._pending[tenant] = [*batch, *newer]
        self._pending.move_to_end(tenant, last=False)

    async def aclose(self, close_timeout_s: float = 5.0) -> None:
        """Stop the background flushing after one last attempt to book what is queued."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + close_timeout_s
        while self._pending and loop.time() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.1)
        if self._pending:
            log.error("usage not booked at shutdown", queued=self.pending)

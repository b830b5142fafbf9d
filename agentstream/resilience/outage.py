"""An outage gate: work pauses while a shared dependency is down, and resumes by itself.

A stage that fails because Redis is unreachable reports the error here. The gate closes, and a
probe (a Redis ``PING``) runs with jittered exponential backoff until the dependency answers;
then the gate opens again. While it is closed a worker takes no new events (the runner waits in
``submit``) and an event that failed waits for the gate before its next attempt, so a blip costs
latency instead of failed requests. Errors that are not outages (``is_outage`` false) pass.

The gate is per worker process; every worker finds out for itself (its own first failure), so
there is nothing to coordinate. ``up`` is what readiness reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

from agentstream.observability import metrics
from agentstream.observability.logging import get_logger

log = get_logger(__name__)

Probe = Callable[[], Awaitable[object]]


class OutageGate:
    def __init__(
        self,
        name: str,
        probe: Probe,
        *,
        is_outage: Callable[[BaseException], bool],
        backoff_s: tuple[float, float] = (0.05, 1.0),
        probe_timeout_s: float = 1.0,
    ) -> None:
        self.name = name
        self._probe = probe
        self._is_outage = is_outage
        self._backoff_s = backoff_s
        self._probe_timeout_s = probe_timeout_s
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task[None] | None = None
        self._since = 0.0
        self.outages = 0
        self._gauge = metrics.DEPENDENCY_UP.labels(name)
        self._gauge.set(1)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def report(self, error: BaseException) -> bool:
        """True when ``error`` means the dependency is down (the gate is then closed until a
        probe succeeds); False for any other error."""
        if not self._is_outage(error):
            return False
        if self._up.is_set():
            self._up.clear()
            self._since = time.monotonic()
            self.outages += 1
            self._gauge.set(0)
            log.warning(
                "dependency unreachable; pausing intake", dependency=self.name, error=_name(error)
            )
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())
        return True

    async def wait_up(self, timeout_s: float | None = None) -> bool:
        """Wait until the dependency answers (at most ``timeout_s``); True if it is up."""
        if self._up.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        return self._up.is_set()

    async def _probe_until_up(self) -> None:
        pause, longest = self._backoff_s
        while True:
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, longest)
            try:
                async with asyncio.timeout(self._probe_timeout_s):
                    await self._probe()
            except Exception:  # noqa: BLE001 - still down: probe again after a pause
                continue
            break
        self._gauge.set(1)
        self._up.set()
        log.warning(
            "dependency reachable again; resuming",
            dependency=self.name,
            outage_s=round(time.monotonic() - self._since, 3),
        )

    async def aclose(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober


def _name(error: BaseException) -> str:
    return type(error).__name__

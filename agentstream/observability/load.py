"""Load signal for shedding (RESOURCE_EXHAUSTED): this worker's memory and in-flight pressure."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb() -> float:
    """Current resident set size of this process in MiB (Linux; 0.0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0


class LoadMonitor:
    """Says why this worker should shed new work, or None. Readings are cached briefly."""

    def __init__(
        self,
        *,
        rss_limit_mb: float | None,
        in_flight_ratio: float | None,
        in_flight: Callable[[], tuple[int, int]],
        cache_s: float = 0.25,
    ) -> None:
        self._rss_limit_mb = rss_limit_mb
        self._ratio = in_flight_ratio
        self._in_flight = in_flight
        self._cache_s = cache_s
        self._checked = 0.0
        self._rss = 0.0

    @property
    def enabled(self) -> bool:
        return self._rss_limit_mb is not None or self._ratio is not None

    def overloaded(self) -> str | None:
        if self._rss_limit_mb is not None:
            now = time.monotonic()
            if now - self._checked > self._cache_s:
                self._rss, self._checked = resident_mb(), now
            if self._rss > self._rss_limit_mb:
                return f"memory {self._rss:.0f} MiB above {self._rss_limit_mb:.0f} MiB"
        if self._ratio is not None:
            held, capacity = self._in_flight()
            if capacity and held / capacity >= self._ratio:
                return f"{held} of {capacity} in-flight slots in use"
        return None

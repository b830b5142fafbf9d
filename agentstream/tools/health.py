"""Health per MCP server and metrics per tool, as plain JSON-able snapshots.

Nothing here holds arguments or results: counters, latencies, error codes, and for servers the
last connection error (its type and message, which come from the transport, not from a call).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

_WINDOW = 512


class LatencyWindow:
    """The most recent latencies (milliseconds) and their percentiles."""

    def __init__(self, size: int = _WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._samples.append(ms)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile (``q`` in 0..100) of the window, ``None`` when empty."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]


@dataclass
class ServerHealth:
    """One MCP server as this worker sees it."""

    name: str
    transport: str
    connected: bool = False
    tool_count: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    connects: int = 0
    calls: int = 0
    call_failures: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow, repr=False)

    def record_error(self, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            error = describe_error(error)
        self.last_error = error[:300]
        self.last_error_at = time.time()

    def snapshot(self) -> dict[str, Any]:
        p95 = self.latency.percentile(95)
        return {
            "name": self.name,
            "transport": self.transport,
            "connected": self.connected,
            "tool_count": self.tool_count,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "connects": self.connects,
            "calls": self.calls,
            "call_failures": self.call_failures,
            "p95_latency_ms": None if p95 is None else round(p95, 3),
        }


@dataclass
class ToolStats:
    calls: int = 0
    errors: int = 0
    cache_hits: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    latency: LatencyWindow = field(default_factory=LatencyWindow, repr=False)

    def snapshot(self) -> dict[str, Any]:
        p50, p95 = self.latency.percentile(50), self.latency.percentile(95)
        return {
            "calls": self.calls,
            "errors": self.errors,
            "cache_hits": self.cache_hits,
            "error_codes": dict(self.error_codes),
            "p50_latency_ms": None if p50 is None else round(p50, 3),
            "p95_latency_ms": None if p95 is None else round(p95, 3),
        }


class ToolMetrics:
    """Per-tool counters, fed by every outcome the executor returns."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolStats] = {}

    def record(
        self, name: str, *, error_code: str | None, duration_ms: float, cache_hit: bool = False
    ) -> None:
        stats = self._tools.get(name)
        if stats is None:
            stats = self._tools[name] = ToolStats()
        stats.calls += 1
        if cache_hit:
            stats.cache_hits += 1
        if error_code is not None:
            stats.errors += 1
            stats.error_codes[error_code] += 1
        stats.latency.add(duration_ms)

    def get(self, name: str) -> ToolStats | None:
        return self._tools.get(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: stats.snapshot() for name, stats in self._tools.items()}


def describe_error(error: BaseException) -> str:
    """``Type: message`` of the first leaf of an exception (group), for health and logs."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    message = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__

"""The data behind ``agentstream top``: a sliding window of finished requests (``MetricsEvent``
records of ``agent.metrics``) turned into one :class:`Frame`: throughput, p50/p95 latency per
stage and end to end, outcomes and error codes, tokens and cost; plus what the caller read from
the workers, Redis and the broker (breaker states, lag, in-flight events).

Feedback (``MetricsEvent`` records with outcome ``FEEDBACK``, processors/feedback.py) is not a
request: it is counted by rating, apart from the requests.

Nothing here renders or does I/O, so it is tested on its own against a live pipeline's records.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentstream.schemas.contracts import MetricsEvent

FEEDBACK = "FEEDBACK"
TOTAL = "total"
"""The latency row of whole requests (queueing between stages included)."""


@dataclass(frozen=True, kw_only=True)
class Latency:
    stage: str
    count: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, kw_only=True)
class Frame:
    window_s: float
    requests: int
    throughput_rps: float
    latency: list[Latency]
    """One row per stage seen in the window (sorted), then the ``total`` row."""
    outcomes: dict[str, int]
    error_codes: dict[str, int]
    tokens: int
    cost_usd: float
    breakers: dict[str, str] = field(default_factory=dict)
    """Breaker key -> state (``closed``, ``half_open``, ``open``)."""
    lag: dict[str, int] = field(default_factory=dict)
    """Stage topic -> records not yet committed by the group."""
    in_flight: dict[str, int] = field(default_factory=dict)
    ratings: dict[str, int] = field(default_factory=dict)
    """Feedback in the window: rating (``"1"``..``"5"``) -> count."""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


class LiveWindow:
    """The finished requests of the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, MetricsEvent]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: MetricsEvent, at: float | None = None) -> None:
        """One finished request; ``at`` (epoch seconds) defaults to the event's own time.
        Events are expected roughly in time order (as a topic partition delivers them)."""
        self._events.append((event.time.timestamp() if at is None else at, event))

    def frame(
        self,
        now: float,
        *,
        breakers: Mapping[str, str] | None = None,
        lag: Mapping[str, int] | None = None,
        in_flight: Mapping[str, int] | None = None,
    ) -> Frame:
        self._expire(now)
        events = [e for _, e in self._events if e.outcome != FEEDBACK]
        ratings = Counter(str(e.feedback_rating) for _, e in self._events if e.outcome == FEEDBACK)
        return Frame(
            window_s=self.window_s,
            requests=len(events),
            throughput_rps=len(events) / self.window_s,
            latency=_latencies(events),
            outcomes=dict(Counter(e.outcome for e in events)),
            error_codes=dict(Counter(e.error_code for e in events if e.error_code)),
            tokens=sum(e.prompt_tokens + e.completion_tokens for e in events),
            cost_usd=sum(e.cost_usd for e in events),
            breakers=dict(breakers or {}),
            lag=dict(lag or {}),
            in_flight=dict(in_flight or {}),
            ratings=dict(ratings),
        )

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()


def _latencies(events: Iterable[MetricsEvent]) -> list[Latency]:
    per_stage: dict[str, list[float]] = {}
    totals: list[float] = []
    for event in events:
        totals.append(event.total_latency_ms)
        for stage, ms in event.stage_latency_ms.items():
            per_stage.setdefault(stage, []).append(ms)
    rows = [_row(stage, values) for stage, values in sorted(per_stage.items())]
    if totals:
        rows.append(_row(TOTAL, totals))
    return rows


def _row(stage: str, values: list[float]) -> Latency:
    return Latency(
        stage=stage,
        count=len(values),
        p50_ms=round(percentile(values, 50), 3),
        p95_ms=round(percentile(values, 95), 3),
    )

"""The data model of `agentstream top` on its own: window expiry, percentiles, side data
(tests/test_status_top.py runs it over a live pipeline's records)."""

from __future__ import annotations

from datetime import UTC, datetime

from agentstream.observability.live import TOTAL, LiveWindow, percentile
from agentstream.schemas.contracts import MetricsEvent


def event(total_ms: float, *, outcome: str = "COMPLETED", code: str | None = None) -> MetricsEvent:
    return MetricsEvent(
        request_id="r",
        session_id="s",
        user_id="u",
        tenant_id="t",
        outcome=outcome,
        error_code=code,
        total_latency_ms=total_ms,
        stage_latency_ms={"validation": 1.0, "generation": total_ms / 2},
        llm_calls=1,
        turns=1,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.001,
        tool_calls=0,
        tool_errors=0,
        time=datetime.now(UTC),
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
    assert percentile([7.0], 95) == 7.0


def test_frame_counts_the_window_and_forgets_older_events() -> None:
    window = LiveWindow(window_s=10)
    window.add(event(100), at=0.0)  # falls out of the window at t=10
    for i in range(1, 5):
        window.add(event(10.0 * i), at=5.0 + i)
    window.add(event(1000, outcome="ERROR:LLM_TIMEOUT", code="LLM_TIMEOUT"), at=9.5)
    frame = window.frame(12.0, breakers={"llm:a": "open"}, lag={"t": 3}, in_flight={"tools": 1})
    assert frame.requests == 5
    assert frame.throughput_rps == 0.5
    assert frame.outcomes == {"COMPLETED": 4, "ERROR:LLM_TIMEOUT": 1}
    assert frame.error_codes == {"LLM_TIMEOUT": 1}
    assert frame.tokens == 75
    rows = {row.stage: row for row in frame.latency}
    assert [row.stage for row in frame.latency] == ["generation", "validation", TOTAL]
    assert (rows[TOTAL].p50_ms, rows[TOTAL].p95_ms) == (30.0, 1000.0)
    assert rows["generation"].p95_ms == 500.0
    assert (frame.breakers, frame.lag, frame.in_flight) == (
        {"llm:a": "open"},
        {"t": 3},
        {"tools": 1},
    )
    assert window.frame(100.0).requests == 0
    assert window.frame(100.0).latency == []

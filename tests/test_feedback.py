"""Feedback without a broker: label bounds, the rating range, and `top` counting it apart."""

from __future__ import annotations

from datetime import UTC, datetime

from agentstream.observability.live import LiveWindow
from agentstream.processors.feedback import OTHER, BoundedLabel, _metrics_event
from agentstream.schemas.contracts import Feedback, MetricsEvent
from agentstream.state.session import RequestIds

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _feedback(rating: int, comment: str | None = None) -> Feedback:
    return Feedback(
        response_id="resp",
        request_id="r",
        session_id="s",
        user_id="u",
        tenant_id="t",
        rating=rating,
        comment=comment,
        created_at=NOW,
    )


def test_label_values_are_bounded() -> None:
    label = BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "c", "a", "x" * 200)] == ["a", "b", OTHER, "a", OTHER]


def test_feedback_event_carries_the_comment_length_only() -> None:
    ids = RequestIds(request_id="r", session_id="s", user_id="u", tenant_id="t")
    event = _metrics_event(
        ids, _feedback(4, "secret words"), agent="a", model="m", comment_chars=12
    )
    assert (event.outcome, event.feedback_rating, event.feedback_comment_chars) == (
        "FEEDBACK",
        4,
        12,
    )
    assert "secret" not in repr(event)


def _request_event(outcome: str, rating: int | None = None) -> MetricsEvent:
    return MetricsEvent(
        request_id="r",
        session_id="s",
        tenant_id="t",
        user_id="u",
        outcome=outcome,
        total_latency_ms=10.0,
        stage_latency_ms={},
        llm_calls=1,
        turns=1,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=0.0,
        tool_calls=0,
        tool_errors=0,
        time=NOW,
        feedback_rating=rating,
    )


def test_top_counts_feedback_apart_from_requests() -> None:
    window = LiveWindow(window_s=60)
    window.add(_request_event("COMPLETED"))
    window.add(_request_event("FEEDBACK", 5))
    window.add(_request_event("FEEDBACK", 5))
    frame = window.frame(NOW.timestamp())
    assert frame.requests == 1
    assert frame.outcomes == {"COMPLETED": 1}
    assert frame.ratings == {"5": 2}

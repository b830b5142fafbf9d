"""Prometheus metrics for dashboards: per-stage event outcomes, in-flight work, handler time,
finished requests by outcome, consumer lag and circuit-breaker states. Served by
``agentstream worker`` on ``AGENTSTREAM_METRICS_PORT`` (off when unset) with the health endpoints
(``observability/http.py``); names start with ``agentstream_``. Labels carry stage, topic,
breaker names and outcome codes only — never ids, messages or tool arguments.

deploy/grafana and deploy/prometheus use these names; tests/test_deploy_metrics.py checks that
every name they use is exported by a live worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from agentstream.observability.http import MetricsServer

EVENTS = Counter(
    "agentstream_stage_events",
    "Events a stage finished, by how they ended.",
    ["stage", "outcome"],  # outcome: processed | dead_lettered | retry_scheduled
)
IN_FLIGHT = Gauge("agentstream_stage_in_flight", "Events held by a stage runner.", ["stage"])
HANDLER_SECONDS = Histogram(
    "agentstream_stage_handler_seconds",
    "Time a stage handler took per event (model and tool calls included).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
REQUESTS = Counter(
    "agentstream_requests_finished",
    "Requests that reached a terminal response, by state and error code.",
    ["state", "code"],
)
DEPENDENCY_UP = Gauge(
    "agentstream_dependency_up",
    "1 while a shared dependency (redis) answers, 0 while this worker waits for it.",
    ["dependency"],
)
POST_PUBLISH_RETRIES = Counter(
    "agentstream_post_publish_retries",
    "Post-publish steps (session release) tried again after a failure.",
    ["stage"],
)


CONSUMER_LAG = Gauge(
    "agentstream_consumer_lag",
    "Records of a stage topic partition not yet committed by the group (high-water mark minus "
    "committed offset); each worker reports the partitions assigned to it.",
    ["group", "topic", "partition"],
)
BREAKER_STATE = Gauge(
    "agentstream_circuit_breaker_state",
    "Circuit breaker state as Redis holds it: 1 for the current state, 0 for the others.",
    ["breaker", "state"],
)
BREAKER_STATES = ("closed", "half_open", "open")


def serve(port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``/metrics`` and the health endpoints on ``port`` (a background thread)."""
    from agentstream.observability.http import MetricsServer

    return MetricsServer(port, addr).start()


# --- user feedback (processors/feedback.py); agent and model labels are bounded ---------------
FEEDBACK = Counter(
    "agentstream_feedback",
    "Ratings users gave responses, by agent, model and rating (1 worst to 5 best).",
    ["agent", "model", "rating"],
)
FEEDBACK_COMMENT_CHARS = Histogram(
    "agentstream_feedback_comment_chars",
    "Length of feedback comments in characters (0 without one); the text is never recorded.",
    ["agent", "model"],
    buckets=(0, 10, 50, 100, 250, 500, 1000, 4000),
)
FEEDBACK_REJECTED = Counter(
    "agentstream_feedback_rejected",
    "Feedback records dropped, by reason (rating out of range).",
    ["reason"],
)


CANCEL_REQUESTS = Counter(
    "agentstream_cancel_requests",
    "Cancel requests by what they found (pending: stopped; finished / unknown: nothing to stop),"
    " counted once, by the worker that decided.",
    ["finding"],
)

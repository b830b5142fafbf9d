"""Prometheus metrics for dashboards: per-stage event outcomes, in-flight work, handler time,
and finished requests by outcome. Served by ``agentstream worker`` on
``AGENTSTREAM_METRICS_PORT`` (off when unset); names start with ``agentstream_``. Labels carry
stage names and outcome codes only — never ids, messages or tool arguments."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose ``/metrics`` on ``port`` (a background thread)."""
    start_http_server(port, addr=addr)

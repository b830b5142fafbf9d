"""Feedback stage: agent.feedback -> Prometheus and the metrics stream.

A :class:`~agentstream.schemas.contracts.Feedback` (a user's 1-5 rating of a response, with an
optional comment) is counted in ``agentstream_feedback{agent,model,rating}`` and
``agentstream_feedback_comment_chars{agent,model}``, and published to ``agent.metrics`` as a
``MetricsEvent`` with outcome ``FEEDBACK`` (rating and comment length; never the comment).

Labels: the agent and model come from the record (``AgentClient.feedback`` fills them in from
the response it received). They are client input, so each worker keeps at most
:data:`MAX_LABEL_VALUES` distinct values per label and counts the rest as ``other``: a client
cannot grow the metric without bound. A rating outside 1-5 is dropped and counted in
``agentstream_feedback_rejected``. Delivery is at least once, so a redelivered feedback record
(after a worker crash) may be counted twice.
"""

from __future__ import annotations

from datetime import datetime

from agentstream.observability import metrics
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageResult, utcnow
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import Feedback, MetricsEvent

STAGE = "feedback"
OUTCOME = "FEEDBACK"
MIN_RATING, MAX_RATING = 1, 5
MAX_LABEL_VALUES = 64
DEFAULT_AGENT = "default"
UNKNOWN_MODEL = "unknown"
OTHER = "other"
log = get_logger(__name__)


class BoundedLabel:
    """Label values as given, up to ``limit`` distinct ones; later newcomers become ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or len(value) > 128:
            return OTHER
        self._seen.add(value)
        return value


class FeedbackStage(Stage[Feedback]):
    stage = STAGE
    contract = Feedback
    cancellable = False  # a rating of a cancelled request's answer is still a rating

    agents = BoundedLabel()
    models = BoundedLabel()

    async def _run(
        self, msg: Inbound, event: Feedback, ids: RequestIds, started: datetime
    ) -> StageResult:
        if not MIN_RATING <= event.rating <= MAX_RATING:
            metrics.FEEDBACK_REJECTED.labels("rating").inc()
            log.warning("feedback dropped: rating out of range", rating=event.rating)
            return StageResult()
        agent = self.agents(event.agent or DEFAULT_AGENT)
        model = self.models(event.model or UNKNOWN_MODEL)
        chars = len(event.comment or "")
        metrics.FEEDBACK.labels(agent, model, str(event.rating)).inc()
        metrics.FEEDBACK_COMMENT_CHARS.labels(agent, model).observe(chars)
        record = _metrics_event(ids, event, agent=agent, model=model, comment_chars=chars)
        topic = self.deps.settings.topics.metrics
        value = self.deps.codec.encode_record(record)
        return StageResult(records=[Outbound(topic=topic, key=ids.key, value=value)])


def _metrics_event(
    ids: RequestIds, event: Feedback, *, agent: str, model: str, comment_chars: int
) -> MetricsEvent:
    return MetricsEvent(
        request_id=ids.request_id,
        session_id=ids.session_id,
        tenant_id=ids.tenant_id,
        user_id=ids.user_id,
        outcome=OUTCOME,
        total_latency_ms=0.0,
        stage_latency_ms={},
        llm_calls=0,
        turns=0,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
        tool_calls=0,
        tool_errors=0,
        time=utcnow(),
        model=model,
        agent=agent,
        feedback_rating=event.rating,
        feedback_comment_chars=comment_chars,
    )

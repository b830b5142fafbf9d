"""The end of a cancelled request: its CANCELLED response and metrics; the session released.

The response has ``state`` CANCELLED and ``error_code`` CANCELLED (a reader whose schema predates
the CANCELLED symbol reads the enum's default, ERROR, and still sees why), the usual stable
``response_id``, and ``metadata`` ``cancelled_by`` / ``cancel_reason``. No ErrorEvent: a
cancellation is what someone asked for, not a failure. It is built from the terminal records of
:func:`agentstream.processors.outcomes.finish`, so it is published, counted and settled (the
session freed if this request holds it) like every other ending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import msgspec

from agentstream.exceptions import ErrorCode
from agentstream.processors.base import Outbound, RequestIds, StageDeps, StageResult
from agentstream.processors.cancellation import MAX_REASON_CHARS, CancelNotice
from agentstream.processors.outcomes import finish
from agentstream.schemas.contracts import AgentState, Contract, MetricsEvent, RequestProgress

CANCELLED_TEXT = "This request was cancelled."


def cancelled_outcome(
    deps: StageDeps,
    *,
    ids: RequestIds,
    progress: RequestProgress,
    notice: CancelNotice,
    request_metadata: Mapping[str, str] | None = None,
    held: bool = True,
) -> StageResult:
    """The terminal records of a cancelled request (response, metrics) and the release step.
    ``held=False``: cancelled before it claimed its session (see ``finish``)."""
    meta = {"cancelled_by": notice.requested_by[:MAX_REASON_CHARS]}
    if notice.reason:
        meta["cancel_reason"] = notice.reason[:MAX_REASON_CHARS]
    done = finish(
        deps,
        ids=ids,
        progress=progress,
        content=CANCELLED_TEXT,
        metadata=meta,
        request_metadata=request_metadata,
        held=held,
    )
    assert done.finished is not None
    response = msgspec.structs.replace(
        done.finished, state=AgentState.CANCELLED, error_code=ErrorCode.CANCELLED, confidence=0.0
    )
    records = [
        _rewritten(deps, done.records[0], response),
        _cancelled_metrics(deps, done.records[1]),
    ]
    return replace(done, records=records, finished=response)


def _rewritten(deps: StageDeps, record: Outbound, value: Contract) -> Outbound:
    return replace(record, value=deps.codec.encode_record(value))


def _cancelled_metrics(deps: StageDeps, record: Outbound) -> Outbound:
    metrics = deps.codec.decode_record(MetricsEvent, record.value)
    cancelled = msgspec.structs.replace(
        metrics, outcome=AgentState.CANCELLED.value, error_code=ErrorCode.CANCELLED
    )
    return _rewritten(deps, record, cancelled)

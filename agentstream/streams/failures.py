"""The records that end an event the failure policy gave up on, for one stage.

A dead letter keeps the original record for an operator (schemas/dead_letter.py) and comes with
an ErrorEvent; for a stage that runs with the session claimed it also frees the session, so the
user's next request is not held behind a dead one. An output too large for the broker ends the
request with an ``OUTPUT_TOO_LARGE`` response instead (processors/oversize.py). The record is
decoded at most once per failure, only to name its request.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.exceptions import AgentStreamError, cause_code
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageDeps, StageResult
from agentstream.processors.outcomes import Failure, error_event, session_release
from agentstream.processors.oversize import output_too_large
from agentstream.processors.signals import DeadLetter
from agentstream.schemas.dead_letter import REPLAYED_CODE, REPLAYED_FROM, dead_letter, header_map
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.policy import transient
from agentstream.streams.topology import StageSpec

MAX_MESSAGE_CHARS = 500
log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class StageFailures:
    deps: StageDeps
    spec: StageSpec

    def ids_of(self, msg: Inbound) -> RequestIds | None:
        """The request a record belongs to; None for bytes that are not the stage's contract."""
        try:
            return RequestIds.of(self.deps.codec.decode_record(self.spec.contract, msg.value))
        except SerializationError:
            return None

    def error_events(
        self, msg: Inbound, code: str, exc: BaseException, attempt: int
    ) -> list[Outbound]:
        return [self._error_event(msg, self.ids_of(msg), code, exc, attempt)]

    def dead_letter(self, msg: Inbound, code: str, exc: BaseException, attempt: int) -> StageResult:
        """Terminal: the original record for an operator, an ErrorEvent, and (for stages that
        hold the session) the session released. A replayed record that failed again with the
        code it was dead-lettered with gets no second dead letter: the first one stays."""
        s = self.deps.settings
        ids = self.ids_of(msg)
        records = [self._error_event(msg, ids, code, exc, attempt)]
        if header_map(msg.headers).get(REPLAYED_CODE) == code:
            log.warning(
                "replayed record failed again the same way; its dead letter stays",
                code=code,
                replayed_from=header_map(msg.headers).get(REPLAYED_FROM, "?"),
            )
        else:
            extra = exc.headers if isinstance(exc, DeadLetter) else None
            records.insert(
                0,
                dead_letter(
                    msg,
                    dlq_topic=self.spec.dlq(s),
                    group=s.consumer_group,
                    stage=self.spec.name,
                    code=code,
                    error=exc,
                    attempt=attempt,
                    cause=cause_code(exc),
                    extra=extra,
                ),
            )
        if ids is None or not self.spec.releases_session:
            return StageResult(records=records)
        return StageResult(records=records, then=session_release(self.deps, ids))

    def too_large(self, msg: Inbound, exc: AgentStreamError) -> StageResult | None:
        return output_too_large(
            self.deps, stage=self.spec.name, contract=self.spec.contract, msg=msg, reason=str(exc)
        )

    def _error_event(
        self,
        msg: Inbound,
        ids: RequestIds | None,
        code: str,
        exc: BaseException,
        attempt: int,
    ) -> Outbound:
        failure = Failure(
            code=code,
            message=str(exc)[:MAX_MESSAGE_CHARS],
            stage=self.spec.name,
            retriable=transient(exc),
            attempt=attempt,
            cause=cause_code(exc),
        )
        return error_event(
            self.deps,
            request_id=ids.request_id if ids else "",  # keyed and named after msg instead
            failure=failure,
            session_id=ids.session_id if ids else None,
            tenant_id=ids.tenant_id if ids else None,
            origin=msg,
        )

"""Control-flow signals a handler raises to tell the runner what to do (not failures).

Raise them ``from`` the error behind them: a dead letter's ``kafka_dlt-exception-fqcn`` names
that error, not the signal (schemas/dead_letter.py).
"""

from __future__ import annotations

from agentstream.exceptions import ControlSignal


class DeadLetter(ControlSignal):
    """Send the inbound record to its stage's dead-letter topic with this reason.

    Raised for records that cannot be answered at all (undecodable bytes, wrong schema): there is
    no request to respond to, so the original bytes are kept for an operator.
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.request_id = request_id
        self.headers = headers or {}
        """Extra headers for the dead letter (what an operator needs to decide on a replay)."""


class RetryLater(ControlSignal):
    """Try this record again later through the stage's tiered retry topics (non-blocking).

    Raised for transient failures that in-call retries could not overcome (provider down,
    breaker open without a fallback). When the tiers are used up the record is dead-lettered.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

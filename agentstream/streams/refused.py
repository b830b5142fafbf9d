"""Producer errors that refuse the record itself: sending the same record again cannot succeed.

aiokafka marks many errors ``retriable = False`` that are infrastructure trouble all the same
(``KafkaTimeoutError`` when the broker is unreachable, ``BrokerNotAvailableError``,
``ProducerClosed``, authorization failures an operator fixes): those are retried like any broker
outage and never dead-letter anything. The errors below say the broker will never take this
record; the runner publishes the event's failure outcome instead (streams/runner.py).
"""

from __future__ import annotations

from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)

from agentstream.exceptions import AgentStreamError, ErrorCode

TOO_LARGE: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
REFUSED: tuple[type[Exception], ...] = (
    *TOO_LARGE,
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    PolicyViolationError,
    UnsupportedForMessageFormatError,
)


class PublishRefusedError(AgentStreamError):
    """The broker refused an output record for good (``code`` OUTPUT_TOO_LARGE or
    PUBLISH_REFUSED)."""

    retriable = False

    def __init__(self, error: BaseException) -> None:
        self.code = (
            ErrorCode.OUTPUT_TOO_LARGE
            if isinstance(error, TOO_LARGE)
            else ErrorCode.PUBLISH_REFUSED
        )
        super().__init__(f"the broker refused an output record: {type(error).__name__}: {error}")
        self.error = error


def refused(exc: BaseException) -> bool:
    """True for errors that refuse the record itself (never worth retrying)."""
    return isinstance(exc, REFUSED)

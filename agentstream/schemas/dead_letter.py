"""The dead-letter convention.

A dead-letter record keeps the original key, value bytes and headers, and adds headers that name
where it came from and why it failed. Names follow Spring Kafka's ``kafka_dlt-*`` convention;
values are UTF-8 text (Spring writes partition/offset as big-endian ints; text is easier to read
with any tool and is what ``agentstream tail`` and ``dlq`` expect). agentstream adds its own
``agentstream-*`` headers with the stable error code, stage and attempt count.

=====================================  ==================================================
header                                 value
=====================================  ==================================================
kafka_dlt-original-topic               origin topic
kafka_dlt-original-partition           origin partition
kafka_dlt-original-offset              origin offset
kafka_dlt-original-timestamp           origin record timestamp (ms since epoch)
kafka_dlt-original-consumer-group      the consumer group that failed it
kafka_dlt-exception-fqcn               class of the error that failed it (fully qualified;
                                       the error behind a control-flow signal, e.g.
                                       ``agentstream.schemas.exceptions.SerializationError``)
kafka_dlt-exception-message            error message (never the payload)
agentstream-error-code                 stable code, e.g. UNDECODABLE, INTERNAL_ERROR
agentstream-error-cause                the failure behind the code, when the code is a
                                       consequence (``CIRCUIT_OPEN`` -> ``LLM_TIMEOUT``,
                                       the failure that opened the breaker); absent otherwise
agentstream-stage                      validation | generation | tools
agentstream-attempt                    attempts made before dead-lettering
agentstream-dlt-time                   when it was dead-lettered (ms since epoch)
=====================================  ==================================================

A dead letter larger than the broker accepts (the original was at or near the limit) is shrunk
by :func:`within_limit`, in this order until it fits: the value is dropped
(``agentstream-payload-omitted``: the original value's size in bytes), then the original's own
headers (``agentstream-headers-omitted``: how many), then the key (``agentstream-key-omitted``: its
size). The ``kafka_dlt-original-*`` headers always remain, so the original can be found on its
topic while the broker retains it; such a record cannot be replayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agentstream.exceptions import ControlSignal
from agentstream.schemas.records import Inbound, Outbound

ORIGINAL_TOPIC = "kafka_dlt-original-topic"
ORIGINAL_PARTITION = "kafka_dlt-original-partition"
ORIGINAL_OFFSET = "kafka_dlt-original-offset"
ORIGINAL_TIMESTAMP = "kafka_dlt-original-timestamp"
ORIGINAL_GROUP = "kafka_dlt-original-consumer-group"
EXCEPTION_FQCN = "kafka_dlt-exception-fqcn"
EXCEPTION_MESSAGE = "kafka_dlt-exception-message"
ERROR_CODE = "agentstream-error-code"
ERROR_CAUSE = "agentstream-error-cause"
STAGE = "agentstream-stage"
ATTEMPT = "agentstream-attempt"
DLT_TIME = "agentstream-dlt-time"

DLQ_HEADERS = (
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    ORIGINAL_GROUP,
    EXCEPTION_FQCN,
    EXCEPTION_MESSAGE,
    ERROR_CODE,
    ERROR_CAUSE,
    STAGE,
    ATTEMPT,
    DLT_TIME,
)
# Set when a dead letter had to be shrunk to fit the broker's record size limit.
PAYLOAD_OMITTED = "agentstream-payload-omitted"
HEADERS_OMITTED = "agentstream-headers-omitted"
KEY_OMITTED = "agentstream-key-omitted"
OMITTED_HEADERS = (PAYLOAD_OMITTED, HEADERS_OMITTED, KEY_OMITTED)
# Retry-topic records (see streams/retry.py): when the record is due, where it goes back to, and
# why it is retried; ATTEMPT counts the deliveries that failed so far.
RETRY_DUE = "agentstream-retry-due"
RETRY_ORIGIN = "agentstream-retry-origin"
RETRY_REASON = "agentstream-retry-reason"
RETRY_HEADERS = (ATTEMPT, RETRY_DUE, RETRY_ORIGIN, RETRY_REASON)

# Set on records that `agentstream dlq replay` republishes: "<dlq topic>/<partition>/<offset>".
# A replay is an operator's decision to run the record again: a side-effecting tool call whose
# outcome was unknown runs again on replay (see state/journal.py).
REPLAYED_FROM = "agentstream-replayed-from"
# Where a record was first consumed ("<topic>/<partition>/<offset>"), kept while it travels
# through retry topics, dead-letter topics and replays: request dedupe (state/dedupe.py) takes
# the record's second coming for a redelivery of the first, not for a repeated request.
FIRST_POSITION = "agentstream-first-position"
# Set by a replay: the error code the record was dead-lettered with. A replayed record that
# fails again with the same code gets an ErrorEvent but no second dead letter (the first stays).
REPLAYED_CODE = "agentstream-replayed-code"
# On TOOL_OUTCOME_UNKNOWN dead letters: JSON list of the calls whose outcome is unknown, each
# {"tool", "step", "read_only", "accepts_idempotency_key"} (never the arguments).
UNKNOWN_CALLS = "agentstream-unknown-calls"
MAX_MESSAGE_CHARS = 1000


def dead_letter(
    msg: Inbound,
    *,
    dlq_topic: str,
    group: str,
    stage: str,
    code: str,
    error: BaseException,
    attempt: int,
    cause: str | None = None,
    extra: dict[str, str] | None = None,
) -> Outbound:
    own = {
        ORIGINAL_TOPIC: msg.topic,
        ORIGINAL_PARTITION: str(msg.partition),
        ORIGINAL_OFFSET: str(msg.offset),
        ORIGINAL_TIMESTAMP: str(msg.timestamp_ms),
        ORIGINAL_GROUP: group,
        EXCEPTION_FQCN: error_class(error),
        EXCEPTION_MESSAGE: str(error)[:MAX_MESSAGE_CHARS],
        ERROR_CODE: code,
        STAGE: stage,
        ATTEMPT: str(attempt),
        DLT_TIME: str(int(time.time() * 1000)),
    }
    if cause:
        own[ERROR_CAUSE] = cause
    own.update(extra or {})
    # a record dead-lettered before (and replayed) must not keep its old verdict's headers
    kept = [(k, v) for k, v in msg.headers if k not in own and k != ERROR_CAUSE]
    headers = with_first_position(msg, kept) + [(k, v.encode()) for k, v in own.items()]
    return Outbound(topic=dlq_topic, key=msg.key, value=msg.value, headers=headers)


#: The headers a dead letter keeps when it is shrunk to fit the broker's limit.
KEPT_HEADERS = frozenset({*DLQ_HEADERS, *OMITTED_HEADERS, FIRST_POSITION})


def first_position(msg: Inbound) -> str:
    """Where ``msg``'s record was first consumed: its ``FIRST_POSITION`` header, else here."""
    for key, value in msg.headers:
        if key == FIRST_POSITION and value:
            return value.decode(errors="replace")
    return msg.position


def with_first_position(msg: Inbound, headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``headers`` (taken from ``msg``) with ``msg``'s first position, added when missing."""
    if any(k == FIRST_POSITION for k, _ in headers):
        return headers
    return [*headers, (FIRST_POSITION, msg.position.encode())]


def error_class(error: BaseException) -> str:
    """The fully qualified class of what failed: a control-flow signal (dead-letter this, retry
    later) names the error it was raised from, following the ``raise ... from`` chain."""
    while isinstance(error, ControlSignal) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__module__}.{type(error).__qualname__}"


_MAX_ATTEMPT_DIGITS = 9


def prior_attempts(msg: Inbound) -> int:
    """Failed deliveries before this one (0 for a record that never went through a retry).

    Only a plain decimal count counts: a negative, signed, padded or absurdly long value (a
    record from a hostile or broken producer) reads as 0, so a retry tier index derived from it
    is never negative."""
    for key, value in msg.headers:
        if key == ATTEMPT:
            if value.isdigit() and len(value) <= _MAX_ATTEMPT_DIGITS:
                return int(value)
            return 0
    return 0


def header_map(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in headers}


def is_dead_letter(record: Outbound) -> bool:
    """A record built by :func:`dead_letter` (it names its origin and its error code)."""
    names = {k for k, _ in record.headers}
    return ORIGINAL_TOPIC in names and ERROR_CODE in names and DLT_TIME in names


def within_limit(record: Outbound, max_bytes: int, size_of: Callable[[Outbound], int]) -> Outbound:
    """``record`` (a dead letter) shrunk until ``size_of`` says it fits ``max_bytes``: first the
    value, then the original's own headers, then the key are omitted, each with a header saying
    so. A dead letter's own headers always stay (the result may still be larger than
    ``max_bytes`` only if those alone are)."""
    if size_of(record) <= max_bytes:
        return record
    headers = [*record.headers, (PAYLOAD_OMITTED, str(len(record.value)).encode())]
    shrunk = Outbound(topic=record.topic, key=record.key, value=b"", headers=headers)
    if size_of(shrunk) <= max_bytes:
        return shrunk
    kept = [(k, v) for k, v in headers if k in KEPT_HEADERS]
    dropped = len(headers) - len(kept)
    shrunk = Outbound(
        topic=record.topic,
        key=record.key,
        value=b"",
        headers=[*kept, (HEADERS_OMITTED, str(dropped).encode())],
    )
    if size_of(shrunk) <= max_bytes or record.key is None:
        return shrunk
    return Outbound(
        topic=record.topic,
        key=None,
        value=b"",
        headers=[*shrunk.headers, (KEY_OMITTED, str(len(record.key)).encode())],
    )

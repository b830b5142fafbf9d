"""Kafka records as the pipeline sees them: one consumed (:class:`Inbound`) and one to produce
(:class:`Outbound`). Bytes in, bytes out: the contracts inside are decoded by the stages."""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, kw_only=True)
class Inbound:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    via: str | None = None
    """The topic of the consumed record this event was handed over from within one worker
    (streams/runner.py, local hand-over); None: consumed from ``topic`` itself. A handed-over
    event keeps that record's partition and offset."""

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    def has_header(self, name: str) -> bool:
        return any(k == name for k, _ in self.headers)


@dataclass(frozen=True, kw_only=True)
class Outbound:
    """One record to produce. The runner sends all of a handler's outputs before acking."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)

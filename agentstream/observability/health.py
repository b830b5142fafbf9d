"""The health vocabulary: what a component reports and what the three health endpoints answer.

A component reports through a :class:`Probe`: ``status()`` returns its latest
:class:`ProbeStatus` (ok or not, and one short line saying why) without doing I/O, so the
metrics server's thread, a readiness check or an intake gate can read it at any time. Whoever
owns the component keeps the status fresh (for Redis: a periodic PING with a short timeout,
``state/probe.py``).

A :class:`HealthSource` answers the endpoints served on the metrics port
(``observability/http.py``):

- ``/livez``: the process works (its event loop answers, no stage is wedged); a failing
  liveness probe gets the process restarted;
- ``/readyz``: the worker does its share (a group member with partitions assigned, Redis
  reachable, not draining); a failing readiness probe only takes it out of rotation;
- ``/healthz``: every component's state as JSON, for people and ``agentstream health``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class ProbeStatus:
    """One component's latest known state."""

    ok: bool
    detail: str = ""
    """One short line: what is wrong (or what is fine), never a secret."""
    since: float = field(default_factory=time.time)
    """Wall-clock time (epoch seconds) when ``ok`` last changed."""
    checked_at: float | None = None
    """Wall-clock time of the last check (None: never checked yet)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "detail": self.detail,
            "since": round(self.since, 3),
            "checked_at": None if self.checked_at is None else round(self.checked_at, 3),
        }


class Probe(Protocol):
    """A component whose health is known without asking it again."""

    @property
    def name(self) -> str: ...

    def status(self) -> ProbeStatus: ...


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The answer of ``/livez`` or ``/readyz``: ok, or the reasons it is not."""

    ok: bool
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, reasons: list[str]) -> Verdict:
        return cls(ok=not reasons, reasons=tuple(reasons))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons)}


class HealthSource(Protocol):
    """What the metrics server asks; called from its own thread, so answers come from state the
    owner keeps up to date (no I/O, no awaiting the event loop)."""

    def livez(self) -> Verdict: ...

    def readyz(self) -> Verdict: ...

    def healthz(self) -> dict[str, Any]: ...


class Starting:
    """The answers before a worker has started: alive, not ready."""

    def livez(self) -> Verdict:
        return Verdict(ok=True)

    def readyz(self) -> Verdict:
        return Verdict(ok=False, reasons=("starting",))

    def healthz(self) -> dict[str, Any]:
        live, ready = self.livez().as_dict(), self.readyz().as_dict()
        return {"status": "starting", "live": live, "ready": ready}

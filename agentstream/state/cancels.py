"""What a cancel request found, decided once in Redis and shared by every worker.

Every worker reads every cancel request (streams/control.py) and asks :meth:`CancelStore.decide`.
The first to ask looks the request up and stores the answer under the cancel request's own key
(``{prefix}:cancel:{T:R}:C``, ``SET NX``); every later ask (the other workers, a worker reading
the control topic again after a restart) gets that stored answer. So all workers act on one
decision, and only the worker that made it reports a cancel with nothing to stop.

- ``unknown``: no dedupe marker for the request (never accepted, or longer ago than
  ``state.dedupe_ttl_s``);
- ``finished``: the request's response is among its session's recorded responses;
- ``pending``: accepted and not answered yet: running, between stages, waiting for its session
  or in a retry tier (or dead-lettered: a replay within ``cancel.window_s`` is then cancelled).

A cancel sent before its request was taken by the validation stage finds it ``unknown``: the
sender learns so and may send the cancel again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agentstream.state.dedupe import RequestDedupe
from agentstream.state.keys import Keys


class CancelFinding(StrEnum):
    UNKNOWN = "unknown"
    FINISHED = "finished"
    PENDING = "pending"


@dataclass(frozen=True, kw_only=True)
class CancelDecision:
    finding: CancelFinding
    session_id: str | None
    """The request's session, when known (named by the cancel or found in its dedupe marker)."""
    decided_here: bool
    """This call made the decision (the others read it): it reports a no-op."""


class CancelStore:
    def __init__(self, redis: Any, keys: Keys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def decide(
        self,
        *,
        tenant_id: str,
        request_id: str,
        cancel_id: str,
        session_id: str | None,
        response_id: str,
    ) -> CancelDecision:
        """The decision on cancel ``cancel_id`` of ``request_id`` (whose response, once
        answered, is ``response_id``): the stored one, or a new one stored now."""
        key = self._keys.cancel(tenant_id, request_id, cancel_id)
        stored = await self._redis.get(key)
        if stored is None:
            finding, session_id = await self._look_up(
                tenant_id, request_id, session_id, response_id
            )
            value = f"{finding.value} {session_id or ''}".rstrip()
            if await self._redis.set(key, value, nx=True, ex=self._ttl_s):
                return CancelDecision(finding=finding, session_id=session_id, decided_here=True)
            stored = await self._redis.get(key)
        text = stored.decode() if isinstance(stored, bytes) else str(stored or "unknown")
        finding_text, _, session = text.partition(" ")
        return CancelDecision(
            finding=CancelFinding(finding_text), session_id=session or None, decided_here=False
        )

    async def _look_up(
        self, tenant_id: str, request_id: str, session_id: str | None, response_id: str
    ) -> tuple[CancelFinding, str | None]:
        marker = await self._redis.get(self._keys.request(tenant_id, request_id))
        if marker is None:
            return CancelFinding.UNKNOWN, session_id
        session_id = session_id or RequestDedupe.session_of(marker)
        if session_id is not None:
            recent = await self._redis.hget(self._keys.context(tenant_id, session_id), "r")
            text = recent.decode() if isinstance(recent, bytes) else (recent or "")
            if response_id in text.split(" "):
                return CancelFinding.FINISHED, session_id
        return CancelFinding.PENDING, session_id

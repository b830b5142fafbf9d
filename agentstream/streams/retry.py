"""Non-blocking tiered retries.

A record that failed transiently in any stage is republished to
``<topic>.retry.<N>s`` for its attempt (default tiers 5 s, 30 s, 300 s) with headers naming its
attempt count, due time and origin; its original offset is then committed like any finished one.
A retry forwarder consumes each retry topic and holds every record until it is due, in its own
key chain, so other sessions keep flowing, then sends it back to the origin topic (at once when
its request is cancelled: :meth:`RetryForwarder.wake`). After the last tier the record goes to
the stage's dead-letter topic.

A session's later requests cannot overtake a retried turn: the session stays claimed by the
request until it finishes (see processors/validation.py), and a request's turns are sequential.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from agentstream.config import TopicSettings
from agentstream.processors.base import Inbound, Outbound, StageResult
from agentstream.schemas.dead_letter import (
    ATTEMPT,
    RETRY_DUE,
    RETRY_HEADERS,
    RETRY_ORIGIN,
    RETRY_REASON,
    header_map,
    prior_attempts,
    with_first_position,
)


def schedule_retry(msg: Inbound, topics: TopicSettings, code: str) -> Outbound | None:
    """The retry-topic record for ``msg``'s next attempt, or None when the tiers are used up."""
    tier = prior_attempts(msg)
    if tier >= len(topics.retry_tiers_s):
        return None
    due_ms = int((time.time() + topics.retry_tiers_s[tier]) * 1000)
    kept = with_first_position(msg, [(k, v) for k, v in msg.headers if k not in RETRY_HEADERS])
    headers = [
        *kept,
        (ATTEMPT, str(tier + 1).encode()),
        (RETRY_DUE, str(due_ms).encode()),
        (RETRY_ORIGIN, msg.topic.encode()),
        (RETRY_REASON, code.encode()),
    ]
    return Outbound(
        topic=topics.retry_topic(msg.topic, tier), key=msg.key, value=msg.value, headers=headers
    )


_MAX_DUE_DIGITS = 15  # epoch milliseconds for the next 30,000 years


class RetryForwarder:
    """Handler for retry topics: wait until due, then send the record back to its origin."""

    def __init__(
        self,
        max_wait_s: float = float("inf"),
        *,
        released: Callable[[bytes], bool] | None = None,
    ) -> None:
        """``max_wait_s``: the longest tier; a due time further away (a broken or hostile
        header) is not waited for longer, so a record never holds its key's chain for ever.
        ``released(key)``: true when the key's request was cancelled: its record is not held
        (it arrived after the cancel, e.g. redelivered to a worker that started later)."""
        self._max_wait_s = max_wait_s
        self._released = released or (lambda key: False)
        # the latest forwards' lateness (bench/retry_delay.py reads it); bounded
        self.lateness_ms: deque[float] = deque(maxlen=10_000)
        self._held: dict[bytes, set[asyncio.Event]] = {}

    def wake(self, key: bytes) -> int:
        """Send the records held for ``key`` (a session) back now, not when due: their request
        was cancelled, and the stage they return to ends it. Returns how many were woken."""
        events = self._held.get(key, set())
        for event in events:
            event.set()
        return len(events)

    async def _hold(self, key: bytes, wait_s: float) -> None:
        woken = asyncio.Event()
        held = self._held.setdefault(key, set())
        held.add(woken)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait_s)
        finally:
            held.discard(woken)
            if not held:
                self._held.pop(key, None)

    async def __call__(self, msg: Inbound) -> StageResult:
        headers = header_map(msg.headers)
        origin = headers.get(RETRY_ORIGIN)
        if not origin:
            return StageResult()  # not a retry record: nothing to forward
        due = headers.get(RETRY_DUE, "")
        # only a plain count of milliseconds is a due time; anything else is due now
        plain = due.isascii() and due.isdigit() and len(due) <= _MAX_DUE_DIGITS
        due_ms = int(due) if plain else 0
        wait_s = min(due_ms / 1000 - time.time(), self._max_wait_s)
        if wait_s > 0 and not self._released(msg.key or b""):
            await self._hold(msg.key or b"", wait_s)
        self.lateness_ms.append(time.time() * 1000 - due_ms)
        return StageResult(
            records=[Outbound(topic=origin, key=msg.key, value=msg.value, headers=msg.headers)]
        )

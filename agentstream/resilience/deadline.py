"""The request deadline, carried in a context variable so every retry loop below it can see it.

The generation (or tool) stage opens a scope from the request's ``deadline`` field::

    with deadline_scope(event["deadline"]):        # a UTC datetime, epoch seconds, or None
        result = await llm.complete(request)

Inside, :func:`~agentstream.resilience.retry.retry_call` stops retrying when the deadline has
passed or would pass before the next attempt, and raises ``DeadlineExceededError`` (code
``TIMEOUT``). Nested scopes keep the earlier of the two deadlines. Deadlines are wall-clock
(epoch seconds) because they come from another process.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from datetime import UTC, datetime

_DEADLINE: ContextVar[float | None] = ContextVar("agentstream_deadline", default=None)

DeadlineLike = datetime | float | int | None


def to_epoch_s(deadline: DeadlineLike) -> float | None:
    """``deadline`` as epoch seconds; naive datetimes are taken as UTC."""
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        return deadline.timestamp()
    return float(deadline)


class deadline_scope:
    """Set the current deadline for the block (the earlier one wins when nested); ``as`` gives
    the deadline in effect. A plain class: it is entered once per model call."""

    __slots__ = ("_deadline", "_token")

    def __init__(self, deadline: DeadlineLike) -> None:
        self._deadline = deadline
        self._token: Token[float | None] | None = None

    def __enter__(self) -> float | None:
        new = to_epoch_s(self._deadline)
        outer = _DEADLINE.get()
        effective = new if outer is None else (outer if new is None else min(outer, new))
        self._token = _DEADLINE.set(effective)
        return effective

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None


def current_deadline() -> float | None:
    """The innermost deadline in epoch seconds, or ``None``."""
    return _DEADLINE.get()


def remaining_s(deadline: float | None = None) -> float | None:
    """Seconds left until ``deadline`` (default: the current one); negative when past."""
    at = current_deadline() if deadline is None else deadline
    return None if at is None else at - time.time()

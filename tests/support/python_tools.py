"""Python tools for the tests (``tools.python_modules = ["tests.support.python_tools"]``).

The worker runs in the test's process, so a test reads and changes the state below directly:
``NOTES`` is what the note tools read, ``CALLS`` counts calls per tool, ``THREADS`` records the
threads sync tools ran on, ``KEYS`` the idempotency keys ``append_log`` received and ``LOG`` the
lines it appended (once per key). ``reset()`` before each test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from datetime import date
from typing import Annotated

from pydantic import BaseModel, Field

import agentstream
from agentstream.tools.exceptions import ToolUnavailableError

NOTES: dict[str, str] = {}
CALLS: Counter[str] = Counter()
THREADS: list[int] = []
KEYS: list[str | None] = []
LOG: list[str] = []
_APPLIED: dict[str, str] = {}


def reset() -> None:
    NOTES.clear()
    CALLS.clear()
    THREADS.clear()
    KEYS.clear()
    LOG.clear()
    _APPLIED.clear()


@agentstream.tool(read_only=True, cache_ttl_s=60)
def read_note(key: str) -> str:
    """Read a note (sync, read-only, cacheable for 60 s).

    Args:
        key: The note's name.
    """
    CALLS["read_note"] += 1
    THREADS.append(threading.get_ident())
    return NOTES.get(key, "(no such note)")


@agentstream.tool(read_only=True)
async def peek_note(key: Annotated[str, Field(description="Which note.", min_length=1)]) -> str:
    """Read a note as it is now (async, read-only, not cacheable)."""
    CALLS["peek_note"] += 1
    await asyncio.sleep(0)
    return NOTES.get(key, "(no such note)")


@agentstream.tool
async def append_log(line: str, idempotency_key: str | None = None) -> str:
    """Append a line to the log (async, side-effecting); once per idempotency key.

    Args:
        line: The text to append.
    """
    CALLS["append_log"] += 1
    KEYS.append(idempotency_key)
    if idempotency_key is not None and idempotency_key in _APPLIED:
        return _APPLIED[idempotency_key]
    LOG.append(line)
    result = f"appended line {len(LOG)}"
    if idempotency_key is not None:
        _APPLIED[idempotency_key] = result
    return result


class Period(BaseModel):
    start: date
    days: int = Field(ge=1, le=31)


@agentstream.tool(name="calendar.last_day", read_only=True)
def last_day(period: Period) -> dict[str, str]:
    """The last day of a period (a pydantic model argument, a dict result)."""
    end = period.start.toordinal() + period.days - 1
    return {"last_day": date.fromordinal(end).isoformat()}


@agentstream.tool(timeout_s=0.2)
def sleepy(seconds: float) -> str:
    """Sleep in a worker thread (sync, side-effecting, 0.2 s timeout)."""
    time.sleep(seconds)
    return "awake"


@agentstream.tool
def broken() -> str:
    """Always raises."""
    raise RuntimeError("the backend said no")


@agentstream.tool(read_only=True)
async def flaky_backend() -> str:
    """Always reports its backend down (counted by the tool's circuit breaker)."""
    CALLS["flaky_backend"] += 1
    raise ToolUnavailableError("backend connection refused (test)")

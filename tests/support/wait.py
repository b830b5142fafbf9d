"""Waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    deadline_s: float = 30.0,
    seen: object = None,
) -> None:
    """Poll ``condition`` (sync or async) until it is true; AssertionError after the deadline
    (naming ``what``, and showing ``seen``, e.g. the last answers, when given)."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            detail = "" if seen is None else f": {seen}"
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}{detail}")
        await asyncio.sleep(0.02)

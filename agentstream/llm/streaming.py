"""Streaming: a model's text handed on as it is written.

A client that can stream implements :class:`StreamingLLM` (``stream(request, sink)``): it writes
its text to the :class:`TokenSink` as it arrives and returns the same ``LLMResult`` that
``complete`` would. Every provider call is one *attempt*: a provider opens
``sink.attempt()`` around its call, writes each delta to it, and leaves the block normally only
when the answer is complete (then the attempt is final). A call that fails leaves it with the
error: the attempt's text is partial, and whoever consumes the stream drops it when a later
attempt of the same turn begins (a retry, a fallback model, a repair turn).

The resilience wrappers (llm/wrappers.py) stream through their inner client, so a retry or a
fallback is simply a further attempt. :func:`stream_or_complete` lets any ``LLMClient`` be
streamed: one that cannot stream answers whole, as a single delta.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from types import ModuleType
from typing import Protocol, runtime_checkable

from agentstream.llm.base import LLMClient, LLMRequest, LLMResult
from agentstream.llm.exceptions import (
    LLMConnectionError,
    LLMInvalidResponseError,
    LLMTimeoutError,
)


class AttemptWriter(Protocol):
    """One attempt's text, delta by delta."""

    async def write(self, text: str) -> None: ...


class TokenSink(Protocol):
    """Where streamed text goes. ``attempt()`` opens one provider call's attempt; leaving the
    block without an error marks its text complete (final)."""

    def attempt(self) -> AbstractAsyncContextManager[AttemptWriter]: ...


@runtime_checkable
class StreamingLLM(Protocol):
    """An ``LLMClient`` that can also stream its answer."""

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult: ...


async def stream_or_complete(llm: LLMClient, request: LLMRequest, sink: TokenSink) -> LLMResult:
    """``llm.stream`` where the client streams, else its whole answer as one delta."""
    if isinstance(llm, StreamingLLM):
        return await llm.stream(request, sink)
    async with sink.attempt() as out:
        result = await llm.complete(request)
        if result.content:
            await out.write(result.content)
    return result


_WORD = re.compile(r"\s*\S+")


def words(text: str) -> list[str]:
    """``text`` cut before each word (leading whitespace kept), so the pieces join back to it
    (trailing whitespace rides on the last piece)."""
    pieces = _WORD.findall(text)
    if not pieces:
        return [text] if text else []
    consumed = sum(len(p) for p in pieces)
    if consumed < len(text):
        pieces[-1] += text[consumed:]
    return pieces


def _http_modules() -> list[ModuleType]:
    """The HTTP client libraries the provider SDKs may read streams with (the current SDKs use
    ``httpx2``, earlier ones ``httpx``)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


_HTTP = _http_modules()
#: A read that stalled mid-stream (retriable, an ``LLMTimeoutError``).
STREAM_TIMEOUTS: tuple[type[Exception], ...] = tuple(m.TimeoutException for m in _HTTP)
#: A connection that broke mid-stream (retriable, an ``LLMConnectionError``).
STREAM_BROKEN: tuple[type[Exception], ...] = tuple(m.TransportError for m in _HTTP)


@contextmanager
def stream_errors(provider: str, unit: str) -> Iterator[None]:
    """Map what breaks a stream below the provider's SDK (``unit``: what the server sends, for
    the message) to the LLM error classes: a stalled read is an ``LLMTimeoutError``, a broken
    connection an ``LLMConnectionError`` (both retriable), a piece that is not JSON an
    ``LLMInvalidResponseError``. The SDK's own errors pass through for its provider to map."""
    try:
        yield
    except STREAM_TIMEOUTS as exc:
        raise LLMTimeoutError(f"{provider}: stream stalled", provider=provider) from exc
    except STREAM_BROKEN as exc:
        raise LLMConnectionError(
            f"{provider}: stream broken ({type(exc).__name__})", provider=provider
        ) from exc
    except ValueError as exc:
        raise LLMInvalidResponseError(
            f"{provider}: stream {unit} is not valid JSON", provider=provider
        ) from exc

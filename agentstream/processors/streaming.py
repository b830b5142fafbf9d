"""Token streaming from the generation stage to ``agent.stream`` (``StreamDelta`` records).

:class:`TurnStream` is the :class:`~agentstream.llm.streaming.TokenSink` of one request's turn.
Each provider call opens an attempt; the attempt's number comes from Redis
(:mod:`agentstream.state.attempts`) when its first record goes out, so any retry, fallback,
redelivery or replay on any worker streams under a higher number and consumers drop the
partial text of lower ones.

Coalescing bounds the record rate: the first text of an attempt goes out at once (time to first
delta), later text when ``streaming.flush_interval_ms`` passed since the oldest text held or
``streaming.flush_tokens`` provider deltas are held. An attempt that completes sends what it
holds with ``final=True`` (always one final record, possibly with empty text, so the last turn
of every request has one) and waits for the broker to acknowledge its records, so every delta
of an answer is on the topic before the answer's response is published. An attempt that fails
sends nothing more.

Streaming is best effort beside the response, which stays the authoritative answer: a delta the
broker refuses is logged (ids and sizes only) and the rest of that attempt is dropped; the model
call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentstream.config import StreamingSettings
from agentstream.llm.base import LLMClient, LLMRequest, LLMResult
from agentstream.llm.streaming import stream_or_complete
from agentstream.observability.logging import get_logger
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import StreamDelta
from agentstream.schemas.records import Outbound
from agentstream.state.attempts import AttemptCounter
from agentstream.state.session import RequestIds

log = get_logger(__name__)

#: Hands one record to the producer and returns once it is queued; the returned awaitable
#: completes when the broker acknowledged it.
SendRecord = Callable[[Outbound], Awaitable[Awaitable[Any]]]


@dataclass(kw_only=True)
class StreamOutput:
    """What a worker gives the generation stage to stream with."""

    topic: str
    send: SendRecord
    attempts: AttemptCounter
    settings: StreamingSettings


class TurnStream:
    """The token sink of one turn of one request."""

    def __init__(self, output: StreamOutput, codec: AvroCodec, ids: RequestIds, turn: int) -> None:
        self.output = output
        self.codec = codec
        self.ids = ids
        self.turn = turn
        self.attempts_opened = 0

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[_Attempt]:
        self.attempts_opened += 1
        out = _Attempt(self)
        try:
            yield out
        except BaseException:
            out.abandon()
            raise
        await out.finish()

    async def replay(self, content: str) -> None:
        """A turn answered from the step journal: its content again, as one final attempt."""
        async with self.attempt() as out:
            out.hold(content)


class _Attempt:
    def __init__(self, stream: TurnStream) -> None:
        self._stream = stream
        self._settings = stream.output.settings
        self._number: int | None = None
        self._sequence = 0
        self._held: list[str] = []
        self._held_since = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._deliveries: list[Awaitable[Any]] = []
        self._broken = False

    async def write(self, text: str) -> None:
        if not text or self._broken:
            return
        self.hold(text)
        if self._sequence == 0 or len(self._held) >= self._settings.flush_tokens:
            await self._flush(final=False)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._flush_later())

    def hold(self, text: str) -> None:
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append(text)

    async def _flush_later(self) -> None:
        wait = self._settings.flush_interval_ms / 1000.0
        await asyncio.sleep(max(0.0, self._held_since + wait - time.monotonic()))
        self._timer = None
        await self._flush(final=False)

    async def _flush(self, *, final: bool) -> None:
        async with self._lock:
            if self._timer is not None and self._timer is not asyncio.current_task():
                self._timer.cancel()
                self._timer = None
            if self._broken or (not self._held and not final):
                return
            text, self._held = "".join(self._held), []
            try:
                await self._send(text, final)
            except Exception as exc:  # noqa: BLE001 - streaming is best effort
                self._broken = True
                log.warning(
                    "stream delta not published; the rest of this attempt is dropped",
                    turn=self._stream.turn,
                    chars=len(text),
                    error=type(exc).__name__,
                )

    async def _send(self, text: str, final: bool) -> None:
        stream = self._stream
        ids = stream.ids
        if self._number is None:
            self._number = await stream.output.attempts.next(
                ids.tenant_id, ids.session_id, ids.request_id, stream.turn
            )
        delta = StreamDelta(
            request_id=ids.request_id,
            session_id=ids.session_id,
            tenant_id=ids.tenant_id,
            turn=stream.turn,
            attempt=self._number,
            sequence=self._sequence,
            text=text,
            final=final,
            time=datetime.now(UTC),
        )
        self._sequence += 1
        record = Outbound(
            topic=stream.output.topic, key=ids.key, value=stream.codec.encode_record(delta)
        )
        self._deliveries.append(await stream.output.send(record))

    async def finish(self) -> None:
        """The attempt's answer is complete: send the rest as final, wait for the broker."""
        await self._flush(final=True)
        for delivery in self._deliveries:
            try:
                await delivery
            except Exception as exc:  # noqa: BLE001 - streaming is best effort
                log.warning("stream delta not acknowledged", error=type(exc).__name__)
                break

    def abandon(self) -> None:
        """The attempt failed: nothing more goes out (its text stays partial)."""
        self._broken = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for delivery in self._deliveries:
            if isinstance(delivery, asyncio.Future):
                delivery.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: an unacknowledged delta of a failed attempt is moot


async def call_model(llm: LLMClient, request: LLMRequest, sink: TurnStream | None) -> LLMResult:
    """The model's answer, streamed to ``sink`` when there is one."""
    if sink is None:
        return await llm.complete(request)
    return await stream_or_complete(llm, request, sink)

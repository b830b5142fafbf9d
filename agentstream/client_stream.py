"""Client side of token streaming: reading ``agent.stream`` and putting an answer together.

:class:`StreamReader` reads every partition of the stream topic from its end (like the
response reader, no consumer group) and hands each request's deltas to whoever waits for them.
It starts on the first :meth:`AgentClient.stream <agentstream.client.AgentClient.stream>` call,
so clients that never stream never read the topic.

:class:`StreamedText` is the consumer's rule in code: within a turn a higher attempt replaces the
text of a lower one (a retry, a fallback model, a replay), and a later turn starts afresh; the
deltas of the current attempt concatenate, in sequence order, to its text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from agentstream.config import Settings
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import StreamDelta
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.partitions import all_partitions


@dataclass(kw_only=True)
class StreamedText:
    """The answer so far, from the deltas of one request in the order they were read."""

    turn: int = -1
    attempt: int = 0
    pieces: list[str] = field(default_factory=list)
    final: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, delta: StreamDelta) -> bool:
        """Take one delta; True when it started a new attempt or turn (drop what was shown).
        Deltas of an older attempt or turn are ignored."""
        if (delta.turn, delta.attempt) < (self.turn, self.attempt):
            return False
        restarted = (delta.turn, delta.attempt) != (self.turn, self.attempt)
        shown = bool(self.text)
        if restarted:
            self.turn, self.attempt, self.pieces, self.final = delta.turn, delta.attempt, [], False
        self.pieces.append(delta.text)
        self.final = delta.final
        return restarted and shown


class StreamReader:
    """Reads ``topics.stream`` and routes deltas to per-request queues."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self._settings = settings
        self._codec = codec
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Queue[StreamDelta]] = {}
        self._starting = asyncio.Lock()
        self.undecodable = 0

    async def start(self) -> None:
        """Positioned at the end of every partition before it returns (idempotent)."""
        async with self._starting:
            if self._consumer is not None:
                return
            consumer = AIOKafkaConsumer(
                **client_kwargs(self._settings),
                enable_auto_commit=False,
                fetch_max_wait_ms=self._settings.kafka.fetch_max_wait_ms,
            )
            await consumer.start()
            self._consumer = consumer
            topic = self._settings.topics.stream
            tps = await all_partitions(consumer, topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self._task = asyncio.get_running_loop().create_task(self._read(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    def watch(self, request_id: str) -> asyncio.Queue[StreamDelta]:
        queue: asyncio.Queue[StreamDelta] = asyncio.Queue()
        self._queues[request_id] = queue
        return queue

    def unwatch(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._dispatch(record.value or b"")

    def _dispatch(self, value: bytes) -> None:
        try:
            delta = self._codec.decode_record(StreamDelta, value)
        except SerializationError:
            self.undecodable += 1
            return
        queue = self._queues.get(delta.request_id)
        if queue is not None:
            queue.put_nowait(delta)

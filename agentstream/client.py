"""Client side: publish AgentRequests and await their AgentResponses.

``AgentClient`` reads ``agent.responses`` from its own position (no consumer group: every client
sees every response), correlates by request_id, and drops repeated responses (the pipeline may
republish a response after a redelivery; the response_id is stable so copies are recognisable).

History: a request may name the response it follows (``previous_response_id``); a session that
no longer holds it (expired, or Redis lost data) answers ``CONTEXT_LOST`` instead of carrying on
without its history. The client fills it in: for each session it remembers the latest response
to a request it sent, and a request that does not say otherwise follows that one. A service with
several client instances per session should store the latest response id with its session and
pass it explicitly.

    async with AgentClient(settings) as client:
        response = await client.ask("add 2 and 3", session_id="s1", user_id="u1", tenant_id="t1")
        print(response.content)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.cancel_client import CancelResult, new_cancel, send_cancel
from agentstream.config import Settings
from agentstream.observability.tracing import receive_span, send_span
from agentstream.schemas.codec import AvroCodec, codec_from_settings
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.idempotence import idempotence_kwargs
from agentstream.streams.kafka_config import client_kwargs

_SEEN_LIMIT = 100_000


@dataclass(frozen=True, kw_only=True)
class AgentResponse:
    response_id: str
    request_id: str
    session_id: str
    user_id: str
    tenant_id: str
    content: str
    state: str
    confidence: float
    execution_time_ms: int
    error_code: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    """Set by the pipeline: model, worker, degraded, cached, retry_after_s, ..."""
    created_at: datetime | None = None
    request_metadata: dict[str, str] = field(default_factory=dict)
    """The request's metadata, echoed."""

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AgentResponse:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})


def new_request(
    message: str,
    *,
    session_id: str,
    user_id: str,
    tenant_id: str,
    request_id: str | None = None,
    allowed_tools: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    deadline: datetime | None = None,
    previous_response_id: str | None = None,
) -> dict[str, Any]:
    """An AgentRequest record (dict) with a fresh request_id unless one is given. Without
    ``previous_response_id`` the :class:`AgentClient` fills it in from the session's latest
    response it received."""
    request = {
        "request_id": request_id or uuid.uuid4().hex,
        "session_id": session_id,
        "user_id": user_id,
        "tenant_id": tenant_id,
        "message": message,
        "allowed_tools": list(allowed_tools),
        "metadata": dict(metadata or {}),
        "created_at": datetime.now(UTC),
        "deadline": deadline,
    }
    if previous_response_id is not None:
        request["previous_response_id"] = previous_response_id
    return request


class AgentClient:
    def __init__(self, settings: Settings, *, codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self._codec = codec or codec_from_settings(settings)
        kwargs = client_kwargs(settings)
        self._producer: AIOKafkaProducer | None = None  # built in start(): idempotent if granted
        self._idempotent = False
        self._consumer = AIOKafkaConsumer(
            **kwargs,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
        self._waiters: dict[str, asyncio.Future[AgentResponse]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        # requests this client sent -> their session; each session's latest response id
        self._sent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._latest: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._subscribers: list[asyncio.Queue[AgentResponse]] = []
        self._reader: asyncio.Task[None] | None = None
        self.duplicates_dropped = 0
        self.undecodable = 0

    async def start(self) -> None:
        """Connect; a start that fails closes what it opened (no unclosed producer) and
        raises."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self._codec.prepare()
        idempotence = await idempotence_kwargs(self.settings)
        self._idempotent = bool(idempotence)
        self._producer = AIOKafkaProducer(
            **client_kwargs(self.settings),
            **idempotence,
            acks="all",
            linger_ms=0,
        )
        await self._producer.start()
        await self._consumer.start()
        topic = self.settings.topics.responses
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, before anything is submitted
            await self._consumer.position(tp)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self._codec.aclose()

    @property
    def idempotent(self) -> bool:
        """Whether requests are produced idempotently (decided at start from the broker)."""
        return self._producer is not None and self._idempotent

    async def __aenter__(self) -> AgentClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def submit(self, request: Mapping[str, Any]) -> str:
        """Publish an AgentRequest (see :func:`new_request`); returns its request_id."""
        if self._producer is None:
            raise RuntimeError("AgentClient.submit() before start()")
        session = (str(request["tenant_id"]), str(request["session_id"]))
        if "previous_response_id" not in request:
            request = {**request, "previous_response_id": self._latest.get(session)}
        value = self._codec.encode("AgentRequest", request)
        topic = self.settings.topics.requests
        request_id = str(request["request_id"])
        _remember(self._sent, request_id, session)
        with send_span(topic, **{"agentstream.request_id": request_id}) as headers:
            await self._producer.send_and_wait(
                topic,
                value=value,
                key=str(request["session_id"]).encode(),
                headers=headers or None,
            )
        return request_id

    async def ask(
        self,
        message: str,
        *,
        session_id: str,
        user_id: str,
        tenant_id: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - the documented client API
        **fields: Any,
    ) -> AgentResponse:
        """Submit a request and wait for its response (TimeoutError after ``timeout`` s)."""
        request = new_request(
            message, session_id=session_id, user_id=user_id, tenant_id=tenant_id, **fields
        )
        return await self.request(request, timeout=timeout)

    async def request(
        self,
        request: Mapping[str, Any],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> AgentResponse:
        request_id = str(request["request_id"])
        future = self.expect(request_id)
        try:
            await self.submit(request)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.pop(request_id, None)

    async def cancel(
        self,
        request_id: str,
        *,
        tenant_id: str | None = None,
        requested_by: str = "agent-client",
        reason: str | None = None,
        session_id: str | None = None,
        wait: float = 10.0,
    ) -> CancelResult:
        """Ask the pipeline to stop ``request_id`` and, for up to ``wait`` s, watch what
        happened (agentstream/cancel_client.py): ``CANCELLED`` (its response is in the result),
        ``FINISHED`` / ``UNKNOWN`` (nothing to stop: reported by the pipeline), or ``NOT_SEEN``.
        A request this client sent (and has no answer for yet) needs no ``tenant_id``: its
        tenant and session are known."""
        if self._producer is None:
            raise RuntimeError("AgentClient.cancel() before start()")
        sent = self._sent.get(request_id)
        tenant_id = tenant_id or (sent[0] if sent else None)
        if tenant_id is None:
            raise ValueError(
                f"cancel({request_id!r}): pass tenant_id (not a request in flight here)"
            )
        cancel = new_cancel(
            request_id,
            tenant_id=tenant_id,
            requested_by=requested_by,
            reason=reason,
            session_id=session_id or (sent[1] if sent else None),
        )
        queue: asyncio.Queue[AgentResponse] = asyncio.Queue()
        self._subscribers.append(queue)  # before sending: no response is missed
        try:
            return await send_cancel(
                self.settings, self._codec, self._producer, cancel, _drain(queue), wait_s=wait
            )
        finally:
            self._subscribers.remove(queue)

    def expect(self, request_id: str) -> asyncio.Future[AgentResponse]:
        """A future for the response to ``request_id`` (register before submitting)."""
        future: asyncio.Future[AgentResponse] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        return future

    async def responses(self) -> AsyncIterator[AgentResponse]:
        """Every response read from now on, without duplicates."""
        queue: asyncio.Queue[AgentResponse] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._dispatch(record)

    def _dispatch(self, record: Any) -> None:
        try:
            response = AgentResponse.from_record(
                self._codec.decode("AgentResponse", record.value or b"")
            )
        except SerializationError:
            self.undecodable += 1
            return
        if response.response_id in self._seen:
            self.duplicates_dropped += 1
            return
        _remember(self._seen, response.response_id, None)
        session = self._sent.pop(response.request_id, None)
        if session is not None:
            _remember(self._latest, session, response.response_id)
        waiter = self._waiters.pop(response.request_id, None)
        if waiter is not None and not waiter.done():
            headers = [(k, v or b"") for k, v in record.headers or ()]
            receive_span(
                record.topic,
                record.partition,
                record.offset,
                headers,
                **{"agentstream.request_id": response.request_id},
            )
            waiter.set_result(response)
        for queue in self._subscribers:
            queue.put_nowait(response)


async def _drain(queue: asyncio.Queue[AgentResponse]) -> AsyncIterator[AgentResponse]:
    while True:
        yield await queue.get()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Store ``key`` as the newest entry of a bounded cache."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > _SEEN_LIMIT:
        cache.popitem(last=False)

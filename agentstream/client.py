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

Streaming (``stream``) yields the answer's ``StreamDelta`` records as the model writes them,
then the ``AgentResponse``; :class:`~agentstream.client_stream.StreamedText` applies the
attempt rule (a retried model call's text replaces the partial one). ``feedback`` rates a
response (1 worst to 5 best) on the feedback topic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentstream.cancel_client import CancelResult, new_cancel, send_cancel
from agentstream.client_stream import StreamReader
from agentstream.config import Settings
from agentstream.observability.tracing import receive_span, send_span
from agentstream.schemas.codec import AvroCodec, codec_from_settings
from agentstream.schemas.contracts import Feedback, StreamDelta
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.idempotence import idempotence_kwargs
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.partitions import all_partitions

_SEEN_LIMIT = 100_000
_RATED_LIMIT = 10_000
#: How long ``stream`` waits, after the response, for the final delta of its last turn (the
#: two topics are read by two consumers; the deltas were acknowledged before the response).
STREAM_TAIL_S = 2.0
THUMBS_DOWN, THUMBS_UP = 1, 5


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
    agent: str | None = None
    """The agent that answered, and the version of its definition."""
    agent_version: str | None = None

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
    stream: bool | None = None,
    agent: str | None = None,
) -> dict[str, Any]:
    """An AgentRequest record (dict) with a fresh request_id unless one is given. Without
    ``previous_response_id`` the :class:`AgentClient` fills it in from the session's latest
    response it received. ``agent`` names the catalog agent (None: the default agent)."""
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
    if stream is not None:
        request["stream"] = stream
    if agent is not None:
        request["agent"] = agent
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
        self._stream_reader = StreamReader(settings, self._codec)
        # responses received, for feedback() by response id
        self._received: OrderedDict[str, AgentResponse] = OrderedDict()
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
        tps = await all_partitions(self._consumer, topic)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve positions now, before anything is submitted
            await self._consumer.position(tp)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        await self._stream_reader.stop()
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

    async def stream(
        self,
        message: str,
        *,
        session_id: str,
        user_id: str,
        tenant_id: str,
        timeout: float = 30.0,  # noqa: ASYNC109 - the documented client API
        **fields: Any,
    ) -> AsyncIterator[StreamDelta | AgentResponse]:
        """Submit a streaming request; yield its deltas as they arrive, then its response.

        A delta whose (turn, attempt) is higher than the previous one's replaces the text so
        far (see :class:`~agentstream.client_stream.StreamedText`). TimeoutError when nothing
        arrives for ``timeout`` seconds."""
        request = new_request(
            message,
            session_id=session_id,
            user_id=user_id,
            tenant_id=tenant_id,
            stream=True,
            **fields,
        )
        async for item in self.stream_request(request, timeout=timeout):
            yield item

    async def stream_request(
        self,
        request: Mapping[str, Any],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> AsyncIterator[StreamDelta | AgentResponse]:
        """:meth:`stream` for a request built with :func:`new_request` (``stream=True``)."""
        await self._stream_reader.start()  # positioned before the request goes out
        request_id = str(request["request_id"])
        queue = self._stream_reader.watch(request_id)
        future = self.expect(request_id)
        finals: set[int] = set()  # turns whose final delta arrived
        try:
            await self.submit(request)
            while (delta := await _next_delta(queue, future, timeout)) is not None:
                if delta.final:
                    finals.add(delta.turn)
                yield delta
            response = future.result()
            last = _last_turn(response)
            if response.ok and "cached" not in response.metadata and last not in finals:
                async for delta in _tail(queue, last, STREAM_TAIL_S):
                    yield delta
            yield response
        finally:
            self._stream_reader.unwatch(request_id)
            self._waiters.pop(request_id, None)

    async def feedback(
        self,
        response: AgentResponse | str,
        rating: int,
        *,
        comment: str | None = None,
    ) -> None:
        """Rate a response, 1 (worst) to 5 (best; :data:`THUMBS_UP`), with an optional
        comment. ``response`` is the :class:`AgentResponse` or the id of one this client
        received (its ids, agent and model go with the rating)."""
        if self._producer is None:
            raise RuntimeError("AgentClient.feedback() before start()")
        if not THUMBS_DOWN <= rating <= THUMBS_UP:
            raise ValueError(f"rating must be between {THUMBS_DOWN} and {THUMBS_UP}")
        rated = self._received.get(response) if isinstance(response, str) else response
        if rated is None:
            raise ValueError("unknown response id: pass the AgentResponse to rate")
        meta = rated.metadata
        record = Feedback(
            response_id=rated.response_id,
            request_id=rated.request_id,
            session_id=rated.session_id,
            user_id=rated.user_id,
            tenant_id=rated.tenant_id,
            rating=rating,
            comment=comment,
            agent=rated.agent or meta.get("agent"),
            model=meta.get("served_by") or meta.get("model"),
            created_at=datetime.now(UTC),
        )
        await self._producer.send_and_wait(
            self.settings.topics.feedback,
            value=self._codec.encode_record(record),
            key=rated.session_id.encode(),
        )

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
        _remember(self._received, response.response_id, response, limit=_RATED_LIMIT)
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


def _remember(
    cache: OrderedDict[Any, Any], key: Any, value: Any, *, limit: int = _SEEN_LIMIT
) -> None:
    """Store ``key`` as the newest entry of a bounded cache."""
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)


def _last_turn(response: AgentResponse) -> int:
    """The model turn that wrote the response: one after its last tool calls' turn."""
    return max((int(c["turn"]) for c in response.tool_calls), default=-1) + 1


async def _next_delta(
    queue: asyncio.Queue[StreamDelta], response: asyncio.Future[AgentResponse], wait_s: float
) -> StreamDelta | None:
    """The next delta, or None when the response arrived first (TimeoutError after wait_s)."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    waiting: set[asyncio.Future[Any]] = {getter, response}
    try:
        done, _ = await asyncio.wait(waiting, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
            with suppress(asyncio.CancelledError):
                await getter
    if getter in done:
        return getter.result()
    if response.done():
        return None
    raise TimeoutError


async def _tail(
    queue: asyncio.Queue[StreamDelta], turn: int, wait_s: float
) -> AsyncIterator[StreamDelta]:
    """Deltas still in flight after the response, up to the final one of ``turn``."""
    loop = asyncio.get_running_loop()
    until = loop.time() + wait_s
    while True:
        try:
            delta = await asyncio.wait_for(queue.get(), max(0.0, until - loop.time()))
        except TimeoutError:
            return
        yield delta
        if delta.final and delta.turn >= turn:
            return

"""Test your agents and tools without a broker or Redis: the real stage handlers in memory.

::

    from agentstream.testing import FunctionModel, TestPipeline, tool_call

    async def test_my_agent() -> None:
        def model(request: LLMRequest) -> LLMResult:          # your model, scripted
            if not any(m.role == "tool" for m in request.messages):
                return tool_call("calculator", {"expression": "2+3"})
            return LLMResult(content=f"It is {request.messages[-1].content}.")

        async with TestPipeline(llm=FunctionModel(model)) as pipeline:
            answer = await pipeline.ask("add 2 and 3", allowed_tools=["calculator"])
        assert answer.state == "COMPLETED"
        assert answer.content == "It is 5."

What runs is what a worker runs: validation, generation and tool execution (the stage handlers
of ``streams/topology.py``), the key-ordered runner with its failure policy (dead letters,
retries), the Avro codec on every hop, and the session store's rules (dedupe, the session
claim, owner checks, the step journal) in :class:`~agentstream.state.memory.MemorySessionStore`.
What does not: Kafka, Redis, admission control (rate limits, budgets, response cache), the
retry tiers' delays (a retried record is redelivered at once) and Redis-backed tool caches and
breakers. The default model is the rule-based stand-in (:mod:`agentstream.llm.local`: its
``call <tool> <json-args>`` directive calls any tool); tools are the built-in ones plus the
Python tools and MCP servers in ``settings.tools``.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from agentstream.agents import Agent, build_catalog
from agentstream.config import Settings
from agentstream.llm.base import LLMClient, LLMRequest, LLMResult, ToolCall
from agentstream.llm.local import LocalRuleModel
from agentstream.processors.base import Inbound, Outbound, StageDeps
from agentstream.processors.cancellation import CancelNotice
from agentstream.processors.streaming import StreamOutput
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import (
    AgentRequest,
    AgentResponse,
    ErrorEvent,
    MetricsEvent,
    StreamDelta,
)
from agentstream.state.attempts import MemoryAttempts
from agentstream.state.memory import MemorySessionStore
from agentstream.streams.failures import StageFailures
from agentstream.streams.policy import FailurePolicy
from agentstream.streams.retry import schedule_retry
from agentstream.streams.runner import StageRunner, hand_over_first_turns
from agentstream.streams.topology import STAGES, retry_topics
from agentstream.tools.base import ManagedTools, ToolExecutor
from agentstream.tools.factory import build_tools

__all__ = ["FunctionModel", "TestPipeline", "tool_call"]

ModelFunction = Callable[[LLMRequest], LLMResult | Awaitable[LLMResult]]


class FunctionModel:
    """An ``LLMClient`` whose answers come from your function (sync or async)."""

    def __init__(self, function: ModelFunction, *, name: str = "function-model") -> None:
        self._function = function
        self._name = name
        self.requests: list[LLMRequest] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: LLMRequest) -> LLMResult:
        self.requests.append(request)
        result = self._function(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def health_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def tool_call(name: str, arguments: Mapping[str, Any], *, call_id: str | None = None) -> LLMResult:
    """A model answer that calls one tool."""
    call = ToolCall(
        call_id=call_id or f"call-{uuid.uuid4().hex[:8]}", name=name, arguments=dict(arguments)
    )
    return LLMResult(content="", tool_calls=(call,), finish_reason="tool_calls")


class TestPipeline:
    """The pipeline in memory. ``ask`` and ``send`` return the request's AgentResponse;
    ``published`` holds every record by topic, decoded views are ``responses``, ``errors``,
    ``metrics`` and ``dead_letters``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        llm: LLMClient | None = None,
        tools: ToolExecutor | None = None,
        timeout_s: float = 30.0,
        agents: Iterable[Agent] = (),
    ) -> None:
        self.settings = settings or Settings(redis_url=None, kafka_bootstrap_servers=None)
        self.llm = llm or LocalRuleModel()
        self._owns_tools = tools is None
        self.tools = tools or build_tools(self.settings)
        self.codec = AvroCodec()
        self.sessions = MemorySessionStore()
        self.timeout_s = timeout_s
        self.published: dict[str, list[Outbound]] = defaultdict(list)
        self._offsets: dict[str, int] = defaultdict(int)
        self._queue: deque[Inbound] = deque()
        self._wake = asyncio.Event()
        self.deps = StageDeps(
            settings=self.settings,
            codec=self.codec,
            llm=self.llm,
            tools=self.tools,
            sessions=self.sessions,
            stream=StreamOutput(
                topic=self.settings.topics.stream,
                send=self._enqueue,
                attempts=MemoryAttempts(),
                settings=self.settings.streaming,
            ),
            agents=build_catalog(self.settings, extra=agents),
        )
        self._runners = self._build_runners()
        self._retry_topics = set(retry_topics(self.settings))

    def _build_runners(self) -> dict[str, StageRunner]:
        runners = {}
        s = self.settings
        for spec in STAGES:
            failures = StageFailures(deps=self.deps, spec=spec)
            tiers = spec.retry_tiers and bool(s.topics.retry_tiers_s)
            runners[spec.topic(s)] = StageRunner(
                stage=spec.name,
                handler=spec.load_handler()(self.deps),
                publish=self._publish,
                dead_letter=failures.dead_letter,
                error_event=failures.error_events,
                retry=(lambda msg, code: schedule_retry(msg, s.topics, code)) if tiers else None,
                policy=FailurePolicy(
                    max_attempts=s.failure.max_attempts,
                    backoff_base_s=s.failure.backoff_base_s,
                    retry_tiers=tiers,
                ),
                max_in_flight=s.limits.max_in_flight,
                too_large=failures.too_large,
            )
        # as a worker running every stage does (streams/app.py)
        hand_over_first_turns(
            s, runners[s.topics.requests], runners[s.topics.generation], self.deps
        )
        return runners

    async def __aenter__(self) -> TestPipeline:
        if isinstance(self.tools, ManagedTools):
            await self.tools.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runner in self._runners.values():
            await runner.cancel()
        if self._owns_tools and isinstance(self.tools, ManagedTools):
            await self.tools.stop()
        await self.llm.aclose()

    # --- asking ---------------------------------------------------------------------------

    async def ask(
        self,
        message: str,
        *,
        session_id: str = "session-1",
        user_id: str = "user-1",
        tenant_id: str = "tenant-1",
        allowed_tools: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        request_id: str | None = None,
        agent: str | None = None,
    ) -> AgentResponse:
        request = AgentRequest(
            request_id=request_id or uuid.uuid4().hex,
            session_id=session_id,
            user_id=user_id,
            tenant_id=tenant_id,
            message=message,
            allowed_tools=list(allowed_tools or []),
            metadata=dict(metadata or {}),
            created_at=datetime.now(UTC),
            agent=agent,
        )
        return await self.send(request)

    async def send(self, request: AgentRequest) -> AgentResponse:
        """Publish ``request`` and run the pipeline until its response is out."""
        self.publish_raw(
            self.settings.topics.requests, self.codec.encode_record(request), request.session_id
        )
        return await self.wait_for_response(request.request_id)

    def cancel(
        self, request_id: str, *, requested_by: str = "test", reason: str | None = None
    ) -> int:
        """Cancel ``request_id`` as a cancel request on the control topic would (its running
        model call or session wait stops, later stage events end it ``CANCELLED``); returns how
        many running pieces of work were stopped. No Redis decision and no no-op report: those
        need the control topic (see tests/test_cancel.py for the whole path)."""
        notice = CancelNotice(
            request_id=request_id,
            cancel_id=uuid.uuid4().hex,
            requested_by=requested_by,
            reason=reason,
        )
        return self.deps.cancellations.cancel(notice)

    def publish_raw(
        self,
        topic: str,
        value: bytes,
        key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Put any bytes (and headers) on a topic (to test what a stage does with them)."""
        self._dispatch(
            Outbound(
                topic=topic,
                key=key.encode() if key else None,
                value=value,
                headers=list(headers or ()),
            )
        )

    async def wait_for_response(self, request_id: str) -> AgentResponse:
        async with asyncio.timeout(self.timeout_s):
            while True:
                for response in self.responses:
                    if response.request_id == request_id:
                        return response
                if not await self._step():
                    raise AssertionError(
                        f"the pipeline went quiet without a response to {request_id!r} "
                        f"(errors: {[e.code for e in self.errors]})"
                    )

    async def run_until_quiet(self) -> None:
        """Run until no stage has anything left to do."""
        async with asyncio.timeout(self.timeout_s):
            while await self._step():
                pass

    # --- what came out ----------------------------------------------------------------------

    @property
    def responses(self) -> list[AgentResponse]:
        return self._decoded(self.settings.topics.responses, AgentResponse)

    @property
    def errors(self) -> list[ErrorEvent]:
        return self._decoded(self.settings.topics.errors, ErrorEvent)

    @property
    def metrics(self) -> list[MetricsEvent]:
        return self._decoded(self.settings.topics.metrics, MetricsEvent)

    @property
    def dead_letters(self) -> list[Outbound]:
        suffix = self.settings.topics.dlq_suffix
        return [r for topic, rs in self.published.items() if topic.endswith(suffix) for r in rs]

    def stream_deltas(self) -> list[StreamDelta]:
        """Every delta streamed so far (requests with ``stream=True``), in order."""
        return self._decoded(self.settings.topics.stream, StreamDelta)

    def _decoded(self, topic: str, contract: Any) -> list[Any]:
        return [self.codec.decode_record(contract, r.value) for r in self.published[topic]]

    # --- the in-memory broker -----------------------------------------------------------------

    async def _publish(self, records: list[Outbound]) -> None:
        for record in records:
            self._dispatch(record)

    async def _enqueue(self, record: Outbound) -> asyncio.Future[None]:
        self._dispatch(record)
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked

    def _dispatch(self, record: Outbound) -> None:
        topic = record.topic
        if topic in self._retry_topics:  # the retry tier's wait is skipped: redeliver now
            origin = next((v for k, v in record.headers if k == dl.RETRY_ORIGIN), b"")
            topic = origin.decode() or topic
        self.published[record.topic].append(record)
        offset = self._offsets[topic]
        self._offsets[topic] += 1
        if topic in self._runners:
            self._queue.append(
                Inbound(
                    topic=topic,
                    partition=0,
                    offset=offset,
                    timestamp_ms=int(datetime.now(UTC).timestamp() * 1000),
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers),
                )
            )
        self._wake.set()

    async def _step(self) -> bool:
        """Hand queued records to their stages, wait for progress; False when all is quiet."""
        while self._queue:
            msg = self._queue.popleft()
            await self._runners[msg.topic].submit(msg, _no_ack)
        if all(r.in_flight == 0 for r in self._runners.values()) and not self._queue:
            return False
        self._wake.clear()
        try:
            async with asyncio.timeout(0.05):
                await self._wake.wait()
        except TimeoutError:
            pass
        return True


def _no_ack() -> None:
    return None

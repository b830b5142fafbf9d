"""Faust wiring: one worker process runs any subset of the stages.

Each stage is a Faust agent over its input topic (raw bytes, manual acks). The agent only hands
events to the stage's :class:`StageRunner` and keeps consuming, so slow LLM or tool calls never
block the consumer loop, heartbeats or other sessions. Outputs go through our own producer so the
runner can wait for the broker's acknowledgement before acking the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import faust

from agentstream.admission import Admission
from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, cause_code
from agentstream.llm.base import LLMClient
from agentstream.llm.factory import build_llm
from agentstream.observability.load import LoadMonitor
from agentstream.observability.logging import get_logger
from agentstream.processors.base import (
    Handler,
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
)
from agentstream.processors.generation import GenerationStage
from agentstream.processors.outcomes import WORKER_ID, Failure, error_event
from agentstream.processors.oversize import output_too_large
from agentstream.processors.signals import RetryLater
from agentstream.processors.tool_execution import ToolExecutionStage
from agentstream.processors.validation import ValidationStage
from agentstream.schemas.codec import codec_from_settings
from agentstream.schemas.dead_letter import dead_letter
from agentstream.schemas.exceptions import SerializationError
from agentstream.state.context import ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.state.redis import redis_from_settings
from agentstream.streams.faust_app import TunedApp
from agentstream.streams.kafka_config import faust_broker_kwargs
from agentstream.streams.message_size import SizeLimit, detect_size_limit
from agentstream.streams.publisher import Publisher
from agentstream.streams.retry import RetryForwarder, schedule_retry
from agentstream.streams.retry_consumer import RetryConsumer
from agentstream.streams.runner import StageRunner
from agentstream.tools.base import ManagedTools, ToolExecutor
from agentstream.tools.factory import build_tools

STAGES = ("validation", "generation", "tools", "retry")
SCHEMA_OF_STAGE = {
    "validation": "AgentRequest",
    "generation": "GenerationTurn",
    "tools": "ToolCallBatch",
}
log = get_logger(__name__)


def stage_topic(settings: Settings, stage: str) -> str:
    topics = settings.topics
    return {
        "validation": topics.requests,
        "generation": topics.generation,
        "tools": topics.tool_calls,
    }[stage]


def stage_topics(settings: Settings, stage: str) -> list[str]:
    """The topics a stage consumes: its stage topic, or every retry tier for ``retry``."""
    if stage == "retry":
        return settings.topics.retry_topics()
    return [stage_topic(settings, stage)]


def to_inbound(event: Any) -> Inbound:
    message = event.message
    headers: Any = message.headers or []
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    return Inbound(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int((message.timestamp or 0) * 1000),
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in headers],
    )


class PipelineWorker:
    """One worker process: a Faust app with an agent per enabled stage."""

    def __init__(
        self,
        settings: Settings,
        *,
        stages: tuple[str, ...] = STAGES,
        llm: LLMClient | None = None,
        tools: ToolExecutor | None = None,
    ) -> None:
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}")
        self.settings = settings
        self.stages = stages
        self._redis = redis_from_settings(settings)
        self.llm = llm or build_llm(settings, redis=self._redis)
        self.runners: dict[str, StageRunner] = {}
        # Built-in + MCP tools with permissions and the result cache; the worker opens and closes
        # the MCP sessions of the executor it builds (a caller's executor is the caller's).
        self._owns_tools = tools is None
        self.tools = tools or build_tools(settings, redis=self._redis)
        self._codec = codec_from_settings(settings)
        self._publisher: Publisher | None = None
        self.size_limit: SizeLimit | None = None
        self._app: faust.App | None = None
        self._retry_consumer: RetryConsumer | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        if isinstance(self.tools, ManagedTools):
            await self.tools.start()  # idempotent
        await self._codec.prepare()
        # once per worker: the producer and every output check use the broker's record limit
        self.size_limit = await detect_size_limit(s)
        self._publisher = Publisher(s, max_request_size=self.size_limit.max_bytes)
        await self._publisher.start()
        keys = Keys(s.state.key_prefix)
        deps = StageDeps(
            settings=s,
            codec=self._codec,
            llm=self.llm,
            tools=self.tools,
            contexts=ContextStore(self._redis, keys, ttl_s=s.state.context_ttl_s),
            dedupe=RequestDedupe(self._redis, keys, ttl_s=s.state.dedupe_ttl_s),
            journal=StepJournal(
                self._redis, keys, retention_s=s.state.journal_retention_s, owner=WORKER_ID
            ),
        )
        if s.admission.enabled:
            deps.admission = Admission(
                self._redis, s, contexts=deps.contexts, tools=self.tools, codec=self._codec
            )
        load = LoadMonitor(
            rss_limit_mb=s.limits.shed_rss_mb,
            in_flight_ratio=s.limits.shed_in_flight_ratio,
            in_flight=self._in_flight,
        )
        deps.load = load if load.enabled else None
        self.retry_forwarder = RetryForwarder()
        handlers: dict[str, Handler] = {
            "validation": ValidationStage(deps),
            "generation": GenerationStage(deps),
            "tools": ToolExecutionStage(deps),
            "retry": self.retry_forwarder,
        }
        for stage in self.stages:
            self.runners[stage] = self._runner(stage, handlers[stage], deps)
        self._app = self._build_app()
        await self._app.start()
        if "retry" in self.runners and s.topics.retry_tiers_s:
            self._retry_consumer = RetryConsumer(s, self.runners["retry"])
            await self._retry_consumer.start()
        log.info("worker started", stages=",".join(self.stages), group=s.consumer_group)

    def _runner(self, stage: str, handler: Handler, deps: StageDeps) -> StageRunner:
        s = self.settings
        assert self._publisher is not None
        assert self.size_limit is not None
        if stage == "retry":
            return StageRunner(
                stage=stage,
                handler=handler,
                publish=self._publisher.publish,
                dead_letter=lambda msg, code, exc, attempt: StageResult(),
                max_in_flight=s.limits.max_in_flight,
                max_record_bytes=self.size_limit.max_bytes,
            )
        dlq_topic = s.topics.dlq(stage_topic(s, stage))

        def ids_of(msg: Inbound) -> RequestIds | None:
            try:
                return RequestIds.of(deps.codec.decode(SCHEMA_OF_STAGE[stage], msg.value))
            except (SerializationError, KeyError):
                return None

        def to_error_event(
            msg: Inbound, code: str, exc: BaseException, attempt: int
        ) -> list[Outbound]:
            ids = ids_of(msg)
            failure = Failure(
                code=code,
                message=str(exc)[:500],
                stage=stage,
                retriable=_retriable(exc),
                attempt=attempt,
                cause=cause_code(exc),
            )
            return [
                error_event(
                    deps,
                    request_id=ids.request_id if ids else f"unknown@{msg.position}",
                    failure=failure,
                    session_id=ids.session_id if ids else None,
                    tenant_id=ids.tenant_id if ids else None,
                    origin=msg,
                )
            ]

        def to_dead_letter(
            msg: Inbound, code: str, exc: BaseException, attempt: int
        ) -> StageResult:
            """Terminal: the original record for an operator, an ErrorEvent, and the session
            released so the user's next request is not held behind a dead request."""
            records = [
                dead_letter(
                    msg,
                    dlq_topic=dlq_topic,
                    group=s.consumer_group,
                    stage=stage,
                    code=code,
                    error=exc,
                    attempt=attempt,
                    cause=cause_code(exc),
                ),
                *to_error_event(msg, code, exc, attempt),
            ]
            ids = ids_of(msg)
            if ids is None or stage == "validation":
                return StageResult(records=records)

            async def release() -> None:
                await deps.contexts.release(ids.tenant_id, ids.session_id, ids.request_id)

            return StageResult(records=records, then=release)

        def too_large(msg: Inbound, exc: AgentStreamError) -> StageResult | None:
            return output_too_large(
                deps, stage=stage, schema=SCHEMA_OF_STAGE[stage], msg=msg, reason=str(exc)
            )

        retry = None
        if stage in ("generation", "tools") and s.topics.retry_tiers_s:

            def retry(msg: Inbound, code: str) -> Outbound | None:
                return schedule_retry(msg, s.topics, code)

        return StageRunner(
            stage=stage,
            handler=handler,
            publish=self._publisher.publish,
            dead_letter=to_dead_letter,
            error_event=to_error_event,
            retry=retry,
            max_in_flight=s.limits.max_in_flight,
            max_record_bytes=self.size_limit.max_bytes,
            too_large=too_large,
        )

    def _build_app(self) -> faust.App:
        s = self.settings
        (s.run_dir / "faust-data").mkdir(parents=True, exist_ok=True)
        app = TunedApp(
            s.consumer_group,
            fetch_max_wait_ms=s.kafka.fetch_max_wait_ms,
            **faust_broker_kwargs(s),
            value_serializer="raw",
            key_serializer="raw",
            broker_session_timeout=s.kafka.session_timeout_s,
            broker_heartbeat_interval=s.kafka.heartbeat_interval_s,
            broker_rebalance_timeout=s.kafka.rebalance_timeout_s,
            broker_commit_interval=s.kafka.commit_interval_s,
            consumer_auto_offset_reset=s.kafka.auto_offset_reset,
            topic_allow_declare=False,
            topic_disable_leader=True,
            web_enabled=False,
            store="memory://",
            datadir=str(s.run_dir / "faust-data"),  # Faust's default is ./<app id>-data
            autodiscover=False,
            producer_acks=-1,
            # Faust would otherwise wait, without limit, for every in-flight event before a
            # rebalance; our runners drain revoked partitions with a bounded grace instead.
            stream_wait_empty=False,
        )
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        faust_stages = [st for st in self.stages if st != "retry"]
        for stage, name in ((st, t) for st in faust_stages for t in stage_topics(s, st)):
            topic = app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            runner = self.runners[stage]

            async def consume(stream: Any, runner: StageRunner = runner) -> None:
                async for event in stream.noack().events():
                    await runner.submit(to_inbound(event), event.ack)

            app.agent(topic, name=f"agentstream.{stage}.{name}")(consume)
        return app

    def _in_flight(self) -> tuple[int, int]:
        """Events held by this worker's stage runners, and their capacity."""
        work = [r for name, r in self.runners.items() if name != "retry"]
        return sum(r.in_flight for r in work), self.settings.limits.max_in_flight * len(work)

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        """Partitions move to another worker: finish what can finish within the grace (bounded
        by the rebalance timeout), commit it, and leave the rest to the next owner."""
        s = self.settings
        grace = min(s.timeouts.shutdown_grace_s, 0.8 * s.kafka.rebalance_timeout_s)
        partitions = {(tp.topic, tp.partition) for tp in revoked}
        await asyncio.gather(*(r.revoke(partitions, grace) for r in self.runners.values()))
        if self._app is not None:
            await self._app.consumer.commit()

    async def stop(self) -> None:
        grace = self.settings.timeouts.shutdown_grace_s
        # records waiting in the retry forwarder are not worth waiting for: unacked, they come
        # back to whichever worker owns their partition next, with their due time intact
        drained = await asyncio.gather(
            *(r.drain(0 if name == "retry" else grace) for name, r in self.runners.items())
        )
        if not all(drained):
            log.warning("shutdown grace expired; unfinished events will be redelivered")
        if self._retry_consumer is not None:
            await self._retry_consumer.stop()
        if self._app is not None:
            await self._app.stop()
        for runner in self.runners.values():
            await runner.cancel()
        if self._publisher is not None:
            await self._publisher.stop()
        await self._codec.aclose()
        await self.llm.aclose()
        if self._owns_tools and isinstance(self.tools, ManagedTools):
            await self.tools.stop()
        await self._redis.aclose()
        log.info("worker stopped")

    async def __aenter__(self) -> PipelineWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, RetryLater) or bool(getattr(exc, "retriable", False))

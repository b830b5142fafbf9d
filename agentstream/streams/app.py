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
from agentstream.llm.base import LLMClient
from agentstream.llm.factory import build_llm
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Handler, Inbound, Outbound, StageDeps
from agentstream.processors.generation import GenerationStage
from agentstream.processors.outcomes import WORKER_ID, Failure, error_event
from agentstream.processors.tool_execution import ToolExecutionStage
from agentstream.processors.validation import ValidationStage
from agentstream.schemas.codec import codec_from_settings
from agentstream.schemas.dead_letter import dead_letter
from agentstream.state.context import ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.state.redis import redis_from_settings
from agentstream.streams.faust_app import TunedApp
from agentstream.streams.kafka_config import faust_broker_kwargs
from agentstream.streams.publisher import Publisher
from agentstream.streams.runner import StageRunner
from agentstream.tools.base import ToolExecutor
from agentstream.tools.registry import default_registry

STAGES = ("validation", "generation", "tools")
log = get_logger(__name__)


def stage_topic(settings: Settings, stage: str) -> str:
    topics = settings.topics
    return {
        "validation": topics.requests,
        "generation": topics.generation,
        "tools": topics.tool_calls,
    }[stage]


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
        self.llm = llm or build_llm(settings)
        self.tools = tools or default_registry()
        self.runners: dict[str, StageRunner] = {}
        self._redis = redis_from_settings(settings)
        self._codec = codec_from_settings(settings)
        self._publisher = Publisher(settings)
        self._app: faust.App | None = None
        self._started = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        await self._codec.prepare()
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
        handlers: dict[str, Handler] = {
            "validation": ValidationStage(deps),
            "generation": GenerationStage(deps),
            "tools": ToolExecutionStage(deps),
        }
        for stage in self.stages:
            self.runners[stage] = self._runner(stage, handlers[stage], deps)
        self._app = self._build_app()
        await self._app.start()
        log.info("worker started", stages=",".join(self.stages), group=s.consumer_group)

    def _runner(self, stage: str, handler: Handler, deps: StageDeps) -> StageRunner:
        s = self.settings
        dlq_topic = s.topics.dlq(stage_topic(s, stage))

        def to_dead_letter(
            msg: Inbound, code: str, exc: BaseException, attempt: int
        ) -> list[Outbound]:
            request_id = getattr(exc, "request_id", None) or f"unknown@{msg.position}"
            failure = Failure(
                code=code, message=str(exc)[:500], stage=stage, retriable=False, attempt=attempt
            )
            return [
                dead_letter(
                    msg,
                    dlq_topic=dlq_topic,
                    group=s.consumer_group,
                    stage=stage,
                    code=code,
                    error=exc,
                    attempt=attempt,
                ),
                error_event(deps, request_id=request_id, failure=failure, origin=msg),
            ]

        return StageRunner(
            stage=stage,
            handler=handler,
            publish=self._publisher.publish,
            dead_letter=to_dead_letter,
            max_in_flight=s.limits.max_in_flight,
        )

    def _build_app(self) -> faust.App:
        s = self.settings
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
            autodiscover=False,
            producer_acks=-1,
            # Faust would otherwise wait, without limit, for every in-flight event before a
            # rebalance; our runners drain revoked partitions with a bounded grace instead.
            stream_wait_empty=False,
        )
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        for stage in self.stages:
            topic = app.topic(
                stage_topic(s, stage),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            runner = self.runners[stage]

            async def consume(stream: Any, runner: StageRunner = runner) -> None:
                async for event in stream.noack().events():
                    await runner.submit(to_inbound(event), event.ack)

            app.agent(topic, name=f"agentstream.{stage}")(consume)
        return app

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
        drained = await asyncio.gather(*(r.drain(grace) for r in self.runners.values()))
        if not all(drained):
            log.warning("shutdown grace expired; unfinished events will be redelivered")
        if self._app is not None:
            await self._app.stop()
        for runner in self.runners.values():
            await runner.cancel()
        await self._publisher.stop()
        await self._codec.aclose()
        await self.llm.aclose()
        await self._redis.aclose()
        log.info("worker stopped")

    async def __aenter__(self) -> PipelineWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
from agentstream.agents import AgentCatalog, build_catalog
from agentstream.config import Settings
from agentstream.llm.base import LLMClient
from agentstream.llm.factory import build_llm
from agentstream.observability.load import LoadMonitor
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Handler, Inbound, Outbound, StageDeps, StageResult
from agentstream.processors.cancellation import Cancellations
from agentstream.processors.outcomes import WORKER_ID
from agentstream.processors.streaming import StreamOutput
from agentstream.resilience.outage import OutageGate
from agentstream.schemas.codec import codec_from_settings
from agentstream.state.attempts import RedisAttempts
from agentstream.state.cancels import CancelStore
from agentstream.state.keys import Keys
from agentstream.state.parking import ParkingLot
from agentstream.state.probe import RedisProbe
from agentstream.state.redis import redis_from_settings, redis_outage
from agentstream.state.redis_session import RedisSessionStore
from agentstream.streams import topology
from agentstream.streams.approval_timer import ApprovalTimer
from agentstream.streams.control import CancelListener
from agentstream.streams.failures import StageFailures
from agentstream.streams.faust_app import TunedApp
from agentstream.streams.health import WorkerHealth
from agentstream.streams.kafka_config import faust_broker_kwargs
from agentstream.streams.message_size import SizeLimit, detect_size_limit
from agentstream.streams.policy import FailurePolicy
from agentstream.streams.preflight import (
    check_mcp_servers,
    check_models,
    check_redis,
    check_topics,
    prepare_codec,
)
from agentstream.streams.publisher import Publisher
from agentstream.streams.retry import RetryForwarder, schedule_retry
from agentstream.streams.retry_consumer import RetryConsumer
from agentstream.streams.runner import StageRunner, hand_over_first_turns
from agentstream.streams.topology import RETRY, WORKER_STAGES, StageSpec, consumed_topics
from agentstream.tools.base import ManagedTools, ToolExecutor
from agentstream.tools.factory import build_tools

log = get_logger(__name__)


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
        stages: tuple[str, ...] = WORKER_STAGES,
        llm: LLMClient | None = None,
        tools: ToolExecutor | None = None,
        agents: AgentCatalog | None = None,
    ) -> None:
        unknown = set(stages) - set(WORKER_STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}")
        self.settings = settings
        self.stages = stages
        # A broken agent definition stops the worker here, before it opens anything.
        self.agents = agents or build_catalog(settings)
        self._redis = redis_from_settings(settings)
        # Closed while Redis is unreachable: the stages take no new work until it answers.
        self.redis_gate = OutageGate("redis", self._redis.ping, is_outage=redis_outage)
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
        self._approval_timer: ApprovalTimer | None = None
        self._started = asyncio.Event()
        self._admission: Admission | None = None
        self._control: CancelListener | None = None
        # Redis reachability for readiness (and anything that must react to an outage)
        self.redis_probe = RedisProbe(
            self._redis,
            interval_s=settings.health.probe_interval_s,
            timeout_s=settings.health.redis_timeout_s,
        )
        self.health = WorkerHealth(
            settings,
            redis=self._redis,
            redis_probe=self.redis_probe,
            runners=self.runners,
            assignment=self._assignment,
            mcp_servers=self._mcp_servers,
        )

    async def start(self) -> None:
        """Check the dependencies (streams/preflight.py), then join the group. A start that
        fails releases what it opened (producer, sessions, connections) and raises."""
        try:
            await self._start()
        except BaseException:
            try:
                await self._release()
            except Exception as exc:  # noqa: BLE001 - the start's own error is the one to raise
                log.warning("cleanup after a failed start failed", error=type(exc).__name__)
            raise

    async def _preflight(self) -> None:
        s = self.settings
        if s.startup.checks:
            await check_topics(s, partitions=s.topics.partitions)
            await check_redis(self._redis, s)
        await prepare_codec(self._codec, s)
        self.redis_probe.start()
        if isinstance(self.tools, ManagedTools):
            await self.tools.start()  # idempotent
        toolset = getattr(self.tools, "toolset", None)
        if s.startup.checks and toolset is not None:
            check_mcp_servers(s, toolset.health())
        if s.startup.checks:
            await check_models(s)

    async def _start(self) -> None:
        s = self.settings
        await self._preflight()
        # once per worker: the producer and every output check use the broker's record limit
        self.size_limit = await detect_size_limit(s)
        self._publisher = Publisher(s, max_request_size=self.size_limit.max_bytes)
        await self._publisher.start()
        sessions = RedisSessionStore(
            self._redis,
            Keys(s.state.key_prefix),
            context_ttl_s=s.state.context_ttl_s,
            dedupe_ttl_s=s.state.dedupe_ttl_s,
            journal_retention_s=s.state.journal_retention_s,
            owner=WORKER_ID,
            autopipeline=s.state.redis_autopipeline,
        )
        parking = ParkingLot(
            self._redis,
            Keys(s.state.key_prefix),
            retention_s=s.state.journal_retention_s,
            context_ttl_s=s.state.context_ttl_s,
        )
        deps = StageDeps(
            settings=s,
            codec=self._codec,
            llm=self.llm,
            tools=self.tools,
            sessions=sessions,
            agents=self.agents,
            cancellations=Cancellations(window_s=s.cancel.window_s),
            parking=parking,
        )
        deps.stream = StreamOutput(
            topic=s.topics.stream,
            send=self._publisher.enqueue,
            attempts=RedisAttempts(
                self._redis, Keys(s.state.key_prefix), ttl_s=s.state.journal_retention_s
            ),
            settings=s.streaming,
        )
        if s.admission.enabled:
            deps.admission = Admission(self._redis, s, contexts=sessions, tools=self.tools)
        self._admission = deps.admission
        load = LoadMonitor(
            rss_limit_mb=s.limits.shed_rss_mb,
            in_flight_ratio=s.limits.shed_in_flight_ratio,
            in_flight=self._in_flight,
        )
        deps.load = load if load.enabled else None
        self.retry_forwarder = RetryForwarder(
            max_wait_s=max(s.topics.retry_tiers_s, default=0.0),
            released=lambda key: deps.cancellations.session_cancelled(key.decode(errors="replace")),
        )
        for name in self.stages:
            if name == RETRY:
                self.runners[name] = self._retry_runner()
            else:
                spec = topology.stage(name)
                self.runners[name] = self._runner(spec, spec.load_handler()(deps), deps)
        # a validated request's first model turn runs here, without a hop through the topic
        hand_over_first_turns(
            s, self.runners.get("validation"), self.runners.get("generation"), deps
        )
        # cancel requests reach every worker (streams/control.py)
        self._control = CancelListener(
            s,
            deps=deps,
            store=CancelStore(self._redis, Keys(s.state.key_prefix), ttl_s=s.cancel.window_s),
            publish=self._publisher.publish,
            forwarder=self.retry_forwarder if RETRY in self.runners else None,
        )
        await self._control.start()
        self._app = self._build_app()
        await self._app.start()
        if RETRY in self.runners and s.topics.retry_tiers_s:
            self._retry_consumer = RetryConsumer(s, self.runners[RETRY])
            await self._retry_consumer.start()
        if "approvals" in self.runners:  # parked calls past their time are denied
            self._approval_timer = ApprovalTimer(s, parking, self._codec, self._publisher.publish)
            self._approval_timer.start()
        self.health.start()
        log.info("worker started", stages=",".join(self.stages), group=s.consumer_group)

    def _retry_runner(self) -> StageRunner:
        """The retry forwarder: holds retry-tier records until due, then sends them back."""
        assert self._publisher is not None
        assert self.size_limit is not None
        return StageRunner(
            stage=RETRY,
            handler=self.retry_forwarder,
            publish=self._publisher.publish,
            dead_letter=lambda msg, code, exc, attempt: StageResult(),
            max_in_flight=self.settings.limits.max_in_flight,
            max_record_bytes=self.size_limit.max_bytes,
        )

    def _runner(self, spec: StageSpec, handler: Handler, deps: StageDeps) -> StageRunner:
        s = self.settings
        assert self._publisher is not None
        assert self.size_limit is not None
        failures = StageFailures(deps=deps, spec=spec)
        tiers = spec.retry_tiers and bool(s.topics.retry_tiers_s)
        retry = None
        if tiers:

            def retry(msg: Inbound, code: str) -> Outbound | None:
                return schedule_retry(msg, s.topics, code)

        return StageRunner(
            stage=spec.name,
            handler=handler,
            publish=self._publisher.publish,
            dead_letter=failures.dead_letter,
            error_event=failures.error_events,
            retry=retry,
            policy=FailurePolicy(
                max_attempts=s.failure.max_attempts,
                backoff_base_s=s.failure.backoff_base_s,
                retry_tiers=tiers,
            ),
            max_in_flight=s.limits.max_in_flight,
            max_record_bytes=self.size_limit.max_bytes,
            too_large=failures.too_large,
            gate=self.redis_gate,
            outage_wait_s=s.failure.outage_wait_s,
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
        faust_stages = [st for st in self.stages if st != RETRY]
        for stage, name in ((st, t) for st in faust_stages for t in consumed_topics(s, st)):
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

    def _assignment(self) -> set[tuple[str, int]]:
        """The partitions assigned to this worker (stage topics and retry topics)."""
        found: set[tuple[str, int]] = set()
        if self._app is not None and self._app.started and not self._app.should_stop:
            found.update((tp.topic, tp.partition) for tp in self._app.consumer.assignment())
        if self._retry_consumer is not None:
            found.update(self._retry_consumer.assignment())
        return found

    def _mcp_servers(self) -> list[dict[str, Any]]:
        health = getattr(self.tools, "health", None)
        servers: list[dict[str, Any]] = health()["servers"] if callable(health) else []
        return servers

    def _in_flight(self) -> tuple[int, int]:
        """Events held by this worker's stage runners, and their capacity."""
        work = [r for name, r in self.runners.items() if name != RETRY]
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
        self.health.draining = True
        grace = self.settings.timeouts.shutdown_grace_s
        # records waiting in the retry forwarder are not worth waiting for: unacked, they come
        # back to whichever worker owns their partition next, with their due time intact
        drained = await asyncio.gather(
            *(r.drain(0 if name == RETRY else grace) for name, r in self.runners.items())
        )
        if not all(drained):
            log.warning("shutdown grace expired; unfinished events will be redelivered")
        await self._release()
        log.info("worker stopped")

    async def _release(self) -> None:
        """Stop and close everything :meth:`start` opened, as far as it got."""
        if self._approval_timer is not None:
            await self._approval_timer.stop()
        if self._retry_consumer is not None:
            await self._retry_consumer.stop()
        if self._control is not None:
            await self._control.stop()
        if self._app is not None:
            await self._app.stop()
        for runner in self.runners.values():
            await runner.cancel()
        if self._admission is not None:
            await self._admission.aclose()  # book the usage still queued
        if self._publisher is not None:
            await self._publisher.stop()
        await self._codec.aclose()
        await self.llm.aclose()
        if self._owns_tools and isinstance(self.tools, ManagedTools):
            await self.tools.stop()
        await self.health.stop()
        await self.redis_probe.stop()
        await self.redis_gate.aclose()
        await self._redis.aclose()

    async def __aenter__(self) -> PipelineWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

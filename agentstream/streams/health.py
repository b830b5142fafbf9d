"""A worker's health: what ``/livez``, ``/readyz`` and ``/healthz`` answer.

- **live**: the event loop answers (its heartbeat is younger than ``health.loop_stall_s``) and
  no stage is wedged (holding events and finishing none for ``health.wedged_after_s``; the retry
  forwarder holds records on purpose and is not watched);
- **ready**: started and not draining, a member of the consumer group with partitions assigned,
  and Redis reachable (:class:`~agentstream.state.probe.RedisProbe`);
- **/healthz**: each component as JSON: Redis, Kafka (assignment), model routes and breaker
  states, MCP servers and their breakers, in-flight events per stage, consumer lag.

The answers are read from the metrics server's thread, so they come from state kept here by
background tasks on the event loop: a heartbeat every second (assignment, stage progress, MCP
servers), breaker states every ``health.probe_interval_s``, lag (and the budget gauge) every
``health.lag_interval_s``. The lag and breaker gauges of ``observability/metrics.py`` are set by
the same tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.metrics import BUDGET_USED
from agentstream.admission.usage import budget_used_ratios
from agentstream.config import Settings
from agentstream.observability import metrics
from agentstream.observability.health import Verdict
from agentstream.observability.logging import get_logger
from agentstream.processors.outcomes import WORKER_ID
from agentstream.resilience.breaker import BreakerSnapshot
from agentstream.resilience.breaker_states import breaker_snapshots
from agentstream.state.probe import RedisProbe
from agentstream.state.redis import RedisClient
from agentstream.streams.lag import LagReader, Partition, PartitionLag
from agentstream.streams.runner import StageRunner
from agentstream.streams.topology import RETRY, STAGES
from agentstream.tools.mcp.config import load_mcp_servers

log = get_logger(__name__)

_BEAT_S = 1.0


def breaker_keys(settings: Settings) -> tuple[list[str], list[str]]:
    """The breakers this configuration uses: model providers (``llm:<name>``, not ``local``)
    and MCP servers (``tools:<name>``)."""
    if not settings.llm.breaker.enabled:
        return [], []
    models = [
        f"llm:{name}"
        for name, provider in sorted(settings.llm.providers.items())
        if provider.breaker and provider.kind != "local"
    ]
    tools = [f"tools:{server.name}" for server in load_mcp_servers(settings.tools)]
    return models, tools


def has_budgets(settings: Settings) -> bool:
    a = settings.admission
    limits = [a.defaults, *a.tenants.values()]
    return a.enabled and any(
        x.daily_tokens is not None or x.daily_cost_usd is not None for x in limits
    )


@dataclass
class _StageWatch:
    processed: int = 0
    progress_at: float = field(default_factory=time.monotonic)


class WorkerHealth:
    """The :class:`~agentstream.observability.health.HealthSource` of one worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisClient,
        redis_probe: RedisProbe,
        runners: Mapping[str, StageRunner],
        assignment: Callable[[], set[Partition]],
        mcp_servers: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.settings = settings
        self.redis_probe = redis_probe
        self.draining = False
        self._redis = redis
        self._runners = runners
        self._assignment = assignment
        self._mcp_servers = mcp_servers
        self._model_keys, self._tool_keys = breaker_keys(settings)
        self._stage_topics = {s.topic(settings) for s in STAGES}
        self._started_at: float | None = None
        self._beat = time.monotonic()
        self._watch: dict[str, _StageWatch] = {}
        self._assigned: frozenset[Partition] = frozenset()
        self._mcp: list[dict[str, Any]] = []
        self._breakers: dict[str, BreakerSnapshot] = {}
        self._breaker_error: str | None = None
        self._lag: list[PartitionLag] = []
        self._lag_error: str | None = None
        self._lag_reader: LagReader | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = time.time()
        self._tick()
        loop = asyncio.get_running_loop()
        h = self.settings.health
        self._tasks = [
            loop.create_task(self._every(_BEAT_S, self._beat_once)),
            loop.create_task(self._every(h.probe_interval_s, self._read_breakers)),
            loop.create_task(self._every(h.lag_interval_s, self._read_lag)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._lag_reader is not None:
            with contextlib.suppress(Exception):
                await self._lag_reader.stop()
            self._lag_reader = None
        group = self.settings.consumer_group
        for item in self._lag:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(group, item.topic, str(item.partition))

    # --- HealthSource ----------------------------------------------------------------------------

    def livez(self) -> Verdict:
        h = self.settings.health
        now = time.monotonic()
        reasons = []
        stalled = now - self._beat
        if self._started_at is not None and stalled > h.loop_stall_s:
            reasons.append(f"event loop unresponsive for {stalled:.0f}s")
        for name, watch in list(self._watch.items()):
            runner = self._runners.get(name)
            idle_for = now - watch.progress_at
            if runner is not None and runner.in_flight and idle_for > h.wedged_after_s:
                reasons.append(
                    f"stage {name} holds {runner.in_flight} events and finished none for "
                    f"{idle_for:.0f}s"
                )
        return Verdict.of(reasons)

    def readyz(self) -> Verdict:
        reasons = []
        if self._started_at is None:
            reasons.append("starting")
        if self.draining:
            reasons.append("draining")
        if not self._assigned:
            reasons.append(f"no partitions assigned in group {self.settings.consumer_group}")
        redis = self.redis_probe.status()
        if not redis.ok:
            reasons.append(f"redis: {redis.detail}")
        return Verdict.of(reasons)

    def healthz(self) -> dict[str, Any]:
        live, ready = self.livez(), self.readyz()
        status = "ok" if live.ok and ready.ok else "not_ready" if live.ok else "not_live"
        return {
            "status": status,
            "live": live.as_dict(),
            "ready": ready.as_dict(),
            "worker": self._worker(),
            "components": {
                "redis": self.redis_probe.status().as_dict(),
                "kafka": self._kafka(),
                "models": self._models(),
                "mcp": {"servers": self._mcp, "breakers": self._breaker_dicts(self._tool_keys)},
                "in_flight": {name: r.in_flight for name, r in list(self._runners.items())},
                "lag": self._lag_dict(),
            },
        }

    # --- report parts ----------------------------------------------------------------------------

    def _worker(self) -> dict[str, Any]:
        return {
            "id": WORKER_ID,
            "group": self.settings.consumer_group,
            "stages": list(self._runners),
            "draining": self.draining,
            "started_at": self._started_at,
        }

    def _kafka(self) -> dict[str, Any]:
        return {
            "ok": bool(self._assigned),
            "group": self.settings.consumer_group,
            "assigned": [{"topic": t, "partition": p} for t, p in sorted(self._assigned)],
        }

    def _models(self) -> dict[str, Any]:
        llm = self.settings.llm
        routes = {name: list(chain) for name, chain in llm.routes.items()}
        for name in llm.providers:
            routes.setdefault(name, [name])
        return {
            "default": llm.model,
            "routes": routes,
            "breakers": self._breaker_dicts(self._model_keys),
            "breaker_error": self._breaker_error,
        }

    def _breaker_dicts(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for key in keys:
            snap = self._breakers.get(key)
            if snap is not None:
                found[key] = {
                    "state": snap.state,
                    "failures": snap.failures,
                    "last_failure": snap.last_failure,
                }
        return found

    def _lag_dict(self) -> dict[str, Any]:
        return {
            "total": sum(item.lag for item in self._lag),
            "error": self._lag_error,
            "partitions": [
                {
                    "topic": item.topic,
                    "partition": item.partition,
                    "lag": item.lag,
                    "high_water": item.high_water,
                    "committed": item.committed,
                }
                for item in self._lag
            ],
        }

    # --- background tasks ------------------------------------------------------------------------

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - health reading must never stop the worker
                check = getattr(step, "__name__", "?")
                log.warning("health check failed", check=check, error=type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def _beat_once(self) -> None:
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        self._beat = now
        self._assigned = frozenset(self._assignment())
        for name, runner in list(self._runners.items()):
            if name == RETRY:
                continue
            watch = self._watch.setdefault(name, _StageWatch())
            if runner.stats.processed != watch.processed or not runner.in_flight:
                watch.processed = runner.stats.processed
                watch.progress_at = now
        if self._mcp_servers is not None:
            self._mcp = self._mcp_servers()

    async def _read_breakers(self) -> None:
        keys = [*self._model_keys, *self._tool_keys]
        if not keys:
            return
        try:
            snaps = await breaker_snapshots(self._redis, self.settings.state.key_prefix, keys)
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the last states, say so
            self._breaker_error = f"breaker states unreadable: {type(exc).__name__}"
            return
        self._breaker_error = None
        self._breakers = {snap.key: snap for snap in snaps}
        for snap in snaps:
            for state in metrics.BREAKER_STATES:
                metrics.BREAKER_STATE.labels(snap.key, state).set(1 if snap.state == state else 0)

    async def _read_lag(self) -> None:
        await self._read_partition_lag()
        if has_budgets(self.settings):
            await self._read_budgets()

    async def _read_partition_lag(self) -> None:
        wanted = [tp for tp in self._assigned if tp[0] in self._stage_topics]
        try:
            reader = self._lag_reader or await self._start_lag_reader()
            lag = await reader.lag(self.settings.consumer_group, wanted)
        except Exception as exc:  # noqa: BLE001 - Kafka trouble: report it, try again later
            self._lag_error = f"lag unreadable: {type(exc).__name__}"
            return
        self._lag_error = None
        group = self.settings.consumer_group
        current = {(item.topic, item.partition) for item in lag}
        for item in self._lag:
            if (item.topic, item.partition) not in current:
                with contextlib.suppress(KeyError):
                    metrics.CONSUMER_LAG.remove(group, item.topic, str(item.partition))
        for item in lag:
            metrics.CONSUMER_LAG.labels(group, item.topic, str(item.partition)).set(item.lag)
        self._lag = lag

    async def _start_lag_reader(self) -> LagReader:
        reader = LagReader(self.settings)
        try:
            await reader.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await reader.stop()
            raise
        self._lag_reader = reader
        return reader

    async def _read_budgets(self) -> None:
        keys = AdmissionKeys(self.settings.state.key_prefix)
        ratios = await budget_used_ratios(self._redis, keys, self.settings.admission)
        for kind in ("tokens", "cost"):
            if kind in ratios:
                BUDGET_USED.labels(kind).set(ratios[kind])

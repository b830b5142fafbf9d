"""The pipeline as an operator sees it from outside: what ``agentstream status`` and ``top`` show.

Read from the broker, Redis and (optionally) the workers' ``/healthz``: consumer lag per stage
topic partition (``streams/lag.py``: high-water marks), records in each dead-letter topic, the
members of the consumer groups (stages and retry forwarder), every circuit breaker with state in
Redis, and each named worker's status and in-flight events. A part that cannot be read is left
empty and named in ``problems``: the rest is still worth showing during an incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentstream.config import Settings
from agentstream.resilience.breaker import BreakerSnapshot
from agentstream.resilience.breaker_states import breaker_snapshots, scan_breaker_keys
from agentstream.state.redis import redis_from_settings
from agentstream.streams.admin import admin_client
from agentstream.streams.lag import LagReader, PartitionLag
from agentstream.streams.topology import STAGES


@dataclass(frozen=True, kw_only=True)
class Member:
    group: str
    member_id: str
    client_id: str
    host: str


@dataclass(frozen=True, kw_only=True)
class WorkerView:
    url: str
    status: str
    """``ok``, ``not_ready``, ``not_live``, ``starting`` or ``unreachable``."""
    in_flight: dict[str, int] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()


@dataclass(kw_only=True)
class PipelineStatus:
    group: str
    lag: list[PartitionLag] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    breakers: list[BreakerSnapshot] = field(default_factory=list)
    workers: list[WorkerView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lag_by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for item in self.lag:
            totals[item.topic] = totals.get(item.topic, 0) + item.lag
        return totals

    @property
    def open_breakers(self) -> list[BreakerSnapshot]:
        return [b for b in self.breakers if b.state != "closed"]

    @property
    def in_flight(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for worker in self.workers:
            for stage, count in worker.in_flight.items():
                totals[stage] = totals.get(stage, 0) + count
        return totals


async def collect_status(settings: Settings, workers: Iterable[str] = ()) -> PipelineStatus:
    status = PipelineStatus(group=settings.consumer_group)
    await _read_kafka(settings, status)
    await _read_breakers(settings, status)
    status.workers = [await read_worker(url) for url in workers]
    return status


async def _read_kafka(settings: Settings, status: PipelineStatus) -> None:
    stage_topics = [s.topic(settings) for s in STAGES]
    dlqs = [settings.topics.dlq(t) for t in stage_topics]
    try:
        async with LagReader(settings) as reader:
            parts = await reader.partitions([*stage_topics, *dlqs])
            status.lag = await reader.lag(
                settings.consumer_group, [p for p in parts if p[0] in stage_topics]
            )
            counts = await reader.record_counts([p for p in parts if p[0] in dlqs])
        for (topic, _), count in counts.items():
            status.dead_letters[topic] = status.dead_letters.get(topic, 0) + count
        status.members = await group_members(
            settings, [settings.consumer_group, f"{settings.consumer_group}.retry"]
        )
    except Exception as exc:  # noqa: BLE001 - shown as a problem, the other parts still count
        status.problems.append(f"kafka: {type(exc).__name__}: {exc}")


async def group_members(settings: Settings, groups: list[str]) -> list[Member]:
    responses = []
    async with admin_client(settings) as admin:
        for group in groups:  # one group per request: Tansu garbles an answer about several
            responses.extend(await admin.describe_consumer_groups([group]))
    members: list[Member] = []
    for response in responses:
        for described in response.groups:
            group, entries = described[1], described[5]
            members.extend(
                Member(group=group, member_id=m[0], client_id=m[1], host=m[2]) for m in entries
            )
    return members


async def _read_breakers(settings: Settings, status: PipelineStatus) -> None:
    if not settings.redis_url:
        return
    redis = redis_from_settings(settings)
    prefix = settings.state.key_prefix
    try:
        keys = await scan_breaker_keys(redis, prefix)
        status.breakers = await breaker_snapshots(redis, prefix, keys)
    except Exception as exc:  # noqa: BLE001 - shown as a problem
        status.problems.append(f"redis: {type(exc).__name__}: {exc}")
    finally:
        await redis.aclose()


async def read_worker(url: str, timeout_s: float = 3.0) -> WorkerView:
    """One worker's ``/healthz`` (``url`` is its metrics port, e.g. ``http://10.0.0.5:9100``)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            report: dict[str, Any] = (await http.get(f"{url.rstrip('/')}/healthz")).json()
    except (httpx.HTTPError, ValueError) as exc:
        return WorkerView(url=url, status="unreachable", reasons=(type(exc).__name__,))
    reasons = (
        *report.get("live", {}).get("reasons", []),
        *report.get("ready", {}).get("reasons", []),
    )
    in_flight = report.get("components", {}).get("in_flight", {})
    return WorkerView(
        url=url, status=str(report.get("status")), in_flight=in_flight, reasons=tuple(reasons)
    )

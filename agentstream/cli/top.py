"""``agentstream top``: a live terminal view of the pipeline.

Finished requests come from ``agent.metrics`` (read without a consumer group, from ``--window``
seconds ago); breaker states, lag and group members from Redis and the broker, in-flight events
from the workers named with ``--worker`` (``streams/status.py``). The numbers are computed by
:class:`agentstream.observability.live.LiveWindow`; this module reads and renders. ``--once``
reads the window up to the current end of the topic, prints one frame and exits. Heavy modules
are imported inside the command (a fast ``--help``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.status import WorkersOption

if TYPE_CHECKING:
    from rich.console import RenderableType

    from agentstream.config import Settings
    from agentstream.observability.live import Frame, LiveWindow
    from agentstream.schemas.codec import AvroCodec


def top(
    workers: WorkersOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    window: Annotated[float, typer.Option(help="Seconds of finished requests shown.")] = 60.0,
    refresh: Annotated[float, typer.Option(help="Seconds between frames.")] = 2.0,
) -> None:
    """Live view: throughput, p50/p95 latency per stage, error codes, breakers and lag."""
    from agentstream.cli.runtime import console, load_cli_settings, until_signal

    settings = load_cli_settings()
    if once:
        frame = asyncio.run(collect_frame(settings, window, workers or []))
        console.print(render(frame))
        return

    async def main(stop: asyncio.Event) -> None:
        await live_view(settings, window, refresh, workers or [], stop)

    asyncio.run(until_signal(main))


class MetricsFeed:
    """``agent.metrics`` from ``window_s`` seconds ago on, decoded into a :class:`LiveWindow`."""

    def __init__(self, settings: Settings, window: LiveWindow) -> None:
        from aiokafka import AIOKafkaConsumer

        from agentstream.schemas.codec import codec_from_settings
        from agentstream.streams.kafka_config import client_kwargs

        self.settings = settings
        self.window = window
        self.codec: AvroCodec = codec_from_settings(settings)
        self.consumer = AIOKafkaConsumer(
            **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=100
        )
        self.partitions: list[Any] = []

    async def start(self) -> None:
        from aiokafka import TopicPartition

        from agentstream.streams.lag import LagReader

        await self.codec.prepare()
        await self.consumer.start()
        topic = self.settings.topics.metrics
        async with LagReader(self.settings) as reader:
            found = await reader.partitions([topic])
        self.partitions = [TopicPartition(t, p) for t, p in found]
        if not self.partitions:
            return
        self.consumer.assign(self.partitions)
        since_ms = int((time.time() - self.window.window_s) * 1000)
        offsets = await self.consumer.offsets_for_times(dict.fromkeys(self.partitions, since_ms))
        for tp, found_offset in offsets.items():
            if found_offset is None:
                await self.consumer.seek_to_end(tp)
            else:
                self.consumer.seek(tp, found_offset.offset)

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.codec.aclose()

    async def poll(self, timeout_ms: int = 200) -> int:
        """Add what arrived; returns how many events were added."""
        from agentstream.schemas.contracts import MetricsEvent
        from agentstream.schemas.exceptions import SerializationError

        if not self.partitions:
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        added = 0
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        for record in (r for records in batches.values() for r in records):
            try:
                event = self.codec.decode_record(MetricsEvent, record.value or b"")
            except SerializationError:
                continue  # not ours to judge here; `agentstream tail` shows such records
            self.window.add(event, at=record.timestamp / 1000)
            added += 1
        return added

    async def catch_up(self, deadline_s: float = 30.0) -> None:
        """Read until every partition's position reaches the high-water mark seen now."""
        from agentstream.streams.lag import LagReader

        async with LagReader(self.settings) as reader:
            ends = await reader.high_watermarks((tp.topic, tp.partition) for tp in self.partitions)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            behind = [
                tp
                for tp in self.partitions
                if await self.consumer.position(tp) < ends.get((tp.topic, tp.partition), 0)
            ]
            if not behind:
                return
            await self.poll()


async def side_data(settings: Settings, workers: list[str]) -> dict[str, Any]:
    """Breakers, lag per stage topic and in-flight events, as :meth:`LiveWindow.frame` takes."""
    from agentstream.streams.status import collect_status

    status = await collect_status(settings, workers)
    return {
        "breakers": {b.key: b.state for b in status.breakers},
        "lag": status.lag_by_topic(),
        "in_flight": status.in_flight,
    }


async def collect_frame(settings: Settings, window_s: float, workers: list[str]) -> Frame:
    """One frame: the window read up to the topic's current end, and the side data now."""
    from agentstream.observability.live import LiveWindow

    feed = MetricsFeed(settings, LiveWindow(window_s))
    await feed.start()
    try:
        await feed.catch_up()
    finally:
        await feed.stop()
    return feed.window.frame(time.time(), **await side_data(settings, workers))


async def live_view(
    settings: Settings, window_s: float, refresh_s: float, workers: list[str], stop: asyncio.Event
) -> None:
    from rich.live import Live

    from agentstream.observability.live import LiveWindow

    feed = MetricsFeed(settings, LiveWindow(window_s))
    await feed.start()
    try:
        side = await side_data(settings, workers)
        with Live(render(feed.window.frame(time.time(), **side)), auto_refresh=False) as live:
            next_side = time.monotonic() + refresh_s
            while not stop.is_set():
                await feed.poll(timeout_ms=int(min(refresh_s, 0.5) * 1000))
                if time.monotonic() >= next_side:
                    side = await side_data(settings, workers)
                    next_side = time.monotonic() + refresh_s
                live.update(render(feed.window.frame(time.time(), **side)), refresh=True)
    finally:
        await feed.stop()


def render(frame: Frame) -> RenderableType:
    from rich.console import Group
    from rich.table import Table

    head = (
        f"[bold]{frame.throughput_rps:.2f} req/s[/bold] over {frame.window_s:g}s "
        f"({frame.requests} requests, {frame.tokens:,} tokens, ${frame.cost_usd:.4f})"
    )
    latency = Table(title="Latency (ms)")
    for column in ("stage", "count", "p50", "p95"):
        latency.add_column(column, justify="left" if column == "stage" else "right")
    for row in frame.latency:
        latency.add_row(row.stage, str(row.count), f"{row.p50_ms:.1f}", f"{row.p95_ms:.1f}")
    codes = _pairs("Outcomes and error codes", {**frame.outcomes, **frame.error_codes})
    breakers = _pairs("Circuit breakers", frame.breakers)
    lag = _pairs("Consumer lag", frame.lag)
    flight = _pairs("In flight", frame.in_flight)
    parts: list[RenderableType] = [head, latency, codes, breakers, lag, flight]
    if frame.ratings:
        parts.append(_pairs("Feedback (rating: count)", frame.ratings))
    return Group(*parts)


def _pairs(title: str, values: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name")
    table.add_column("value", justify="right")
    for key, value in sorted(values.items()):
        table.add_row(key, str(value))
    return table

"""``agentstream dev``: local broker and Redis (where settings name none) until Ctrl-C/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agentstream.cli.runtime import load_cli_settings

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.embedded import BrokerKind, DevStack

TANSU_FETCH_WAIT_MS = 5
BROKER_KINDS = ("tansu", "apache-kafka")  # agentstream.embedded.BROKER_KINDS (a test holds it)

console = Console(highlight=False, soft_wrap=True)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_pipeline(settings: Settings, demo: bool, *, on_tansu: bool = False) -> None:
    """Run every stage in this process; with ``demo``, send a few requests and print answers."""
    from agentstream.cli.demo import run_demo
    from agentstream.streams.app import PipelineWorker

    if settings.kafka.fetch_max_wait_ms > TANSU_FETCH_WAIT_MS and on_tansu:
        # Tansu does not answer a waiting fetch early when data arrives (see faust_app.py).
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={"fetch_max_wait_ms": TANSU_FETCH_WAIT_MS}
                )
            }
        )
    async with PipelineWorker(settings):
        console.print("Pipeline running: validation, generation, tools.")
        if demo:
            await run_demo(settings, console)
        await asyncio.Event().wait()


def _check_broker(value: str) -> str:
    if value not in BROKER_KINDS:
        raise typer.BadParameter(f"choose one of: {', '.join(BROKER_KINDS)}")
    return value


def dev(
    demo: Annotated[bool, typer.Option("--demo", help="Also send demo requests.")] = False,
    broker: Annotated[
        str,
        typer.Option(
            callback=_check_broker,
            help="Local broker to start when AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS is unset: "
            "tansu (needs nothing but Python) or apache-kafka (Apache Kafka 4; needs Java 17+, "
            "and Maven the first time to fetch it).",
        ),
    ] = "tansu",
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Where the logs go (default: <run_dir>/run-<time>-<pid>)."),
    ] = None,
) -> None:
    """Start a local Kafka broker (Tansu or Apache Kafka) and Redis and run the pipeline on them."""
    settings = load_cli_settings(log=False)
    if settings.metrics_port is not None:
        from agentstream.observability import metrics

        metrics.serve(settings.metrics_port)
    kind: BrokerKind = "apache-kafka" if broker == "apache-kafka" else "tansu"
    asyncio.run(_serve(settings, demo, run_dir, kind))  # failures: one line (cli/errors.py)


async def _serve(settings: Settings, demo: bool, run_dir: Path | None, broker: BrokerKind) -> None:
    from agentstream.embedded import DevStack

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        stack = DevStack(settings, run_dir, broker=broker)
        async with stack as live:
            _print_stack(stack, live)
            on_tansu = stack.kafka is not None and broker == "tansu"
            await _run_until(stop, run_pipeline(live, demo, on_tansu=on_tansu))
            console.print("Stopping ...")
            stopping_since = time.monotonic()
        console.print(f"Stopped in {time.monotonic() - stopping_since:.2f}s.")
    finally:
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _run_until(stop: asyncio.Event, pipeline_coro: Coroutine[Any, Any, None]) -> None:
    """Run the pipeline until it ends or ``stop`` is set; a pipeline failure propagates."""
    pipeline = asyncio.create_task(pipeline_coro)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({pipeline, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (pipeline, stopper):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    with contextlib.suppress(asyncio.CancelledError):
        await pipeline  # re-raises a pipeline failure


def _print_stack(stack: DevStack, live: Settings) -> None:
    from agentstream.config import mask_url

    if stack.kafka is None:
        kafka = "external (AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS)"
    elif stack.broker == "apache-kafka":
        kafka = f"embedded Apache Kafka, pid {stack.kafka.pid}"
    else:
        kafka = f"embedded Tansu, pid {stack.kafka.pid}"
    redis = (
        f"embedded redis-server, pid {stack.redis.pid}"
        if stack.redis is not None
        else "external (AGENTSTREAM_REDIS_URL)"
    )
    console.print(f"[bold]Kafka[/bold]  {live.kafka_bootstrap_servers}  ({kafka})")
    console.print(f"[bold]Redis[/bold]  {mask_url(live.redis_url or '')}  ({redis})")
    if stack.pids:
        console.print(f"[bold]Logs[/bold]   {stack.run_dir}")
    console.print(f"Topics: {len(stack.created_topics)} created. Ctrl-C to stop.")

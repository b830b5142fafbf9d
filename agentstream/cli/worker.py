"""``agentstream worker``: run stage workers (all stages by default) until SIGINT/SIGTERM.

Before joining the consumer group the worker checks its dependencies (streams/preflight.py); a
failed check ends it with one line naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import err_console, load_cli_settings, run, until_signal

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.streams.app import PipelineWorker

STOP_MARGIN_S = 15.0
# streams.topology.WORKER_STAGES
STAGES = ("validation", "generation", "tools", "feedback", "approvals", "delegation", "retry")


async def stop_within_bound(pipeline: PipelineWorker, stop: asyncio.Event, bound_s: float) -> None:
    """Drain and stop gracefully; a second signal, or a stop that outlasts ``bound_s`` (say the
    broker is gone and commits hang), exits at once: unfinished work is redelivered anyway."""
    stop.clear()
    stopping = asyncio.create_task(pipeline.stop())
    again = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopping, again}, timeout=bound_s, return_when="FIRST_COMPLETED")
    again.cancel()
    if stopping in done:
        stopping.result()
        return
    _notice("worker did not stop in time; exiting now", error=True)
    os._exit(3)


def _notice(message: str, *, error: bool = False) -> None:
    """An operator line: a log record when logs are JSON (production), else plain stderr."""
    from agentstream.cli.errors import json_logs_enabled

    if json_logs_enabled():
        from agentstream.observability.logging import get_logger

        log = get_logger("agentstream.cli.worker")
        (log.error if error else log.info)(message)
    else:
        err_console.print(message, style="red" if error else None, markup=False)


def _serve_metrics(settings: Settings) -> Any:
    """The metrics and health server on ``metrics_port`` (None when the port is unset)."""
    if settings.metrics_port is None:
        return None
    from agentstream.observability import metrics

    server = metrics.serve(settings.metrics_port)
    _notice(f"metrics and health on :{settings.metrics_port}")
    return server


def worker(
    stages: Annotated[
        str,
        typer.Option(
            help="Comma-separated stages to run: validation,generation,tools,approvals,delegation."
        ),
    ] = ",".join(STAGES),
) -> None:
    """Run pipeline stage workers against the configured Kafka and Redis."""
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    bad = set(chosen) - set(STAGES)
    if bad or not chosen:
        raise typer.BadParameter(f"stages must be among {', '.join(STAGES)}", param_hint="--stages")
    settings = load_cli_settings()
    from agentstream.observability.otel import configure_tracing
    from agentstream.streams.app import PipelineWorker

    shutdown_tracing = configure_tracing(settings)
    server = _serve_metrics(settings)

    async def main(stop: asyncio.Event) -> None:
        pipeline = PipelineWorker(settings, stages=chosen)
        if server is not None:  # /livez, /readyz, /healthz answer for this worker from now on
            server.health = pipeline.health
        await pipeline.start()
        # Long-lived startup objects leave the collector's generations; fewer, larger young-gen
        # collections suit a process that allocates per event and frees it right after.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        _notice(f"worker running stages {','.join(chosen)}; Ctrl-C to stop")
        await stop.wait()
        await stop_within_bound(pipeline, stop, settings.timeouts.shutdown_grace_s + STOP_MARGIN_S)

    try:
        run(until_signal(main))
    finally:
        shutdown_tracing()

"""``agentstream worker``: run stage workers (all stages by default) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Annotated

import typer

from agentstream.cli.runtime import err_console, load_cli_settings, run, until_signal
from agentstream.exceptions import AgentStreamError
from agentstream.observability import metrics
from agentstream.streams.app import PipelineWorker
from agentstream.streams.topology import WORKER_STAGES as STAGES

STOP_MARGIN_S = 15.0


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
    err_console.print("[red]worker did not stop in time; exiting now[/red]")
    os._exit(3)


def worker(
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages to run: validation,generation,tools.")
    ] = ",".join(STAGES),
) -> None:
    """Run pipeline stage workers against the configured Kafka and Redis."""
    chosen = tuple(s.strip() for s in stages.split(",") if s.strip())
    bad = set(chosen) - set(STAGES)
    if bad or not chosen:
        raise typer.BadParameter(f"stages must be among {', '.join(STAGES)}", param_hint="--stages")
    settings = load_cli_settings()
    server = None
    if settings.metrics_port is not None:
        server = metrics.serve(settings.metrics_port)
        err_console.print(f"metrics and health on :{settings.metrics_port}")

    async def main(stop: asyncio.Event) -> None:
        pipeline = PipelineWorker(settings, stages=chosen)
        if server is not None:  # /livez, /readyz, /healthz answer for this worker from now on
            server.health = pipeline.health
        await pipeline.start()
        # Long-lived startup objects leave the collector's generations; fewer, larger young-gen
        # collections suit a process that allocates per event and frees it right after.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        err_console.print(f"worker running stages {','.join(chosen)}; Ctrl-C to stop")
        await stop.wait()
        await stop_within_bound(pipeline, stop, settings.timeouts.shutdown_grace_s + STOP_MARGIN_S)

    try:
        run(until_signal(main))
    except AgentStreamError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc

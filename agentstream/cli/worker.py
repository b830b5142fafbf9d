"""``agentstream worker``: run stage workers (all stages by default) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agentstream.cli.runtime import err_console, load_cli_settings, until_signal
from agentstream.exceptions import AgentStreamError
from agentstream.streams.app import STAGES, PipelineWorker


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

    async def main(stop: asyncio.Event) -> None:
        async with PipelineWorker(settings, stages=chosen):
            err_console.print(f"worker running stages {','.join(chosen)}; Ctrl-C to stop")
            await stop.wait()

    try:
        asyncio.run(until_signal(main))
    except AgentStreamError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc

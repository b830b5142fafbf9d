"""``agentstream topics create|list``: the pipeline's Kafka topics."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentstream.config import Settings, mask_url
from agentstream.exceptions import AgentStreamError
from agentstream.streams.admin import ensure_topics, list_topics
from agentstream.streams.topology import pipeline_topics

topics_app = typer.Typer(
    help="Create and inspect the pipeline's Kafka topics.", no_args_is_help=True
)
console = Console(highlight=False)


def _settings() -> Settings:
    settings = Settings()
    if not settings.kafka_bootstrap_servers:
        console.print(
            "[red]No Kafka broker configured.[/red] Set AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS, "
            "or run `agentstream dev` (it starts a local broker and creates the topics)."
        )
        raise typer.Exit(2)
    return settings


@topics_app.command("create")
def create(
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Topic to create (repeatable). Default: all of them."),
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Partitions for new topics (default: settings).")
    ] = None,
) -> None:
    """Create the pipeline's topics; existing ones are left as they are."""
    settings = _settings()
    if partitions is not None:
        settings = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"partitions": partitions})}
        )
    try:
        created = asyncio.run(ensure_topics(settings, topic or None))
    except AgentStreamError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from exc
    wanted = topic or pipeline_topics(settings)
    console.print(
        f"{len(created)} created, {len(wanted) - len(created)} already existed "
        f"on {mask_url(settings.kafka_bootstrap_servers or '')}"
    )
    for name in created:
        console.print(f"  + {name}")


@topics_app.command("list")
def list_() -> None:
    """List the cluster's topics with their partition counts."""
    settings = _settings()
    try:
        topics = asyncio.run(list_topics(settings))
    except AgentStreamError as exc:
        console.print(str(exc), style="red", markup=False)
        raise typer.Exit(1) from exc
    table = Table("name", "partitions", title=f"Topics on {settings.kafka_bootstrap_servers}")
    for name in sorted(topics):
        table.add_row(name, str(topics[name]))
    console.print(table)

"""``agentstream topics create|list``: the pipeline's Kafka topics."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from agentstream.cli.runtime import console, load_cli_settings

if TYPE_CHECKING:
    from agentstream.config import Settings

topics_app = typer.Typer(
    help="Create and inspect the pipeline's Kafka topics.", no_args_is_help=True
)


def _settings() -> Settings:
    from agentstream.exceptions import ConfigError

    settings = load_cli_settings()
    if not settings.kafka_bootstrap_servers:
        raise ConfigError(
            "no Kafka brokers configured [AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS]; set it to "
            "host:port[,host:port], or run `agentstream dev` (it starts a local broker and "
            "creates the topics)"
        )
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
    from agentstream.config import mask_url
    from agentstream.streams.admin import ensure_topics
    from agentstream.streams.preflight import kafka_topics
    from agentstream.streams.topology import pipeline_topics

    settings = _settings()
    if partitions is not None:
        settings = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"partitions": partitions})}
        )

    async def create_all() -> list[str]:
        await kafka_topics(settings)  # unreachable: one line naming the setting
        return await ensure_topics(settings, topic or None)

    created = asyncio.run(create_all())
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
    from rich.table import Table

    from agentstream.streams.preflight import kafka_topics

    settings = _settings()
    topics = asyncio.run(kafka_topics(settings))
    table = Table("name", "partitions", title=f"Topics on {settings.kafka_bootstrap_servers}")
    for name in sorted(topics):
        table.add_row(name, str(topics[name]))
    console.print(table)

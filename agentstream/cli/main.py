"""The ``agentstream`` command line: a thin root that registers the command modules."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream import __version__
from agentstream.cli.asyncapi import asyncapi
from agentstream.cli.dev import dev
from agentstream.cli.dlq import dlq_app
from agentstream.cli.send import send
from agentstream.cli.tail import tail
from agentstream.cli.tools import tools_app
from agentstream.cli.topics import topics_app
from agentstream.cli.usage import usage
from agentstream.cli.worker import worker

app = typer.Typer(
    name="agentstream",
    help="Run AI agents as a production service on Kafka.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"agentstream {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run AI agents as a production service on Kafka."""


app.add_typer(topics_app, name="topics")
app.add_typer(tools_app, name="tools")
app.add_typer(dlq_app, name="dlq")
app.command("dev")(dev)
app.command("worker")(worker)
app.command("send")(send)
app.command("tail")(tail)
app.command("usage")(usage)
app.command("asyncapi")(asyncapi)

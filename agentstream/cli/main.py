"""The ``agentstream`` command line: a thin root that registers the command modules.

Command modules import only typer and rich at module level (``--help`` loads all of them) and
the rest inside their command functions; adding a command is an import and a register line.
Expected failures end in one line (cli/errors.py); ``--debug`` shows their traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentstream import __version__
from agentstream.cli.agents import agents_app
from agentstream.cli.approvals import approvals_app
from agentstream.cli.asyncapi import asyncapi
from agentstream.cli.cancel import cancel
from agentstream.cli.dev import dev
from agentstream.cli.dlq import dlq_app
from agentstream.cli.errors import exit_with, set_debug
from agentstream.cli.health import health
from agentstream.cli.send import send
from agentstream.cli.status import status
from agentstream.cli.tail import tail
from agentstream.cli.tools import tools_app
from agentstream.cli.top import top
from agentstream.cli.topics import topics_app
from agentstream.cli.usage import usage
from agentstream.cli.worker import worker


class _Cli(typer.Typer):
    """A Typer app whose expected failures end in one line and an exit code (cli/errors.py)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line, or --debug
            exit_with(exc)


app = _Cli(
    name="agentstream",
    help="Run AI agents as a production service on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failure (not one line).")
    ] = False,
) -> None:
    """Run AI agents as a production service on Kafka."""
    set_debug(debug)


app.add_typer(topics_app, name="topics")
app.add_typer(tools_app, name="tools")
app.add_typer(dlq_app, name="dlq")
app.add_typer(agents_app, name="agents")
app.add_typer(approvals_app, name="approvals")
app.command("dev")(dev)
app.command("worker")(worker)
app.command("send")(send)
app.command("cancel")(cancel)
app.command("tail")(tail)
app.command("usage")(usage)
app.command("health")(health)
app.command("status")(status)
app.command("top")(top)
app.command("asyncapi")(asyncapi)

"""``agentstream asyncapi``: write the AsyncAPI 3 document of the topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def asyncapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: print it).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 when OUTPUT differs from it."),
    ] = False,
) -> None:
    """The AsyncAPI 3 document of the pipeline (topics, keys, headers, Avro payloads) for the
    current settings' topic names; docs/asyncapi.yaml is the one for the defaults."""
    from agentstream.config import Settings
    from agentstream.streams.asyncapi import render

    text = render(Settings())
    if output is None:
        typer.echo(text, nl=False)
        return
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            typer.echo(f"{output} is stale: run `agentstream asyncapi --output {output}`", err=True)
            raise typer.Exit(1)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")

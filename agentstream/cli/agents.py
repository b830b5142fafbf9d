"""``agentstream agents list|show NAME``: the agent catalog as a worker with these settings loads
it (the same checks: a broken definition is one error line), with each agent's version."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, load_cli_settings

if TYPE_CHECKING:
    from agentstream.agents import Agent, AgentCatalog

agents_app = typer.Typer(help="Inspect the agents workers serve.", no_args_is_help=True)


def _catalog() -> AgentCatalog:
    from agentstream.agents import build_catalog

    return build_catalog(load_cli_settings())


def _summary(agent: Agent, catalog: AgentCatalog) -> dict[str, Any]:
    return {
        "name": agent.name,
        "version": agent.version,
        "default": agent.name == catalog.default,
        "model": agent.model,
        "tools": list(agent.tools),
        "structured_output": agent.output_schema is not None,
        "description": agent.description,
    }


@agents_app.command("list")
def list_agents(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every agent with its version, model route and tool globs."""
    from rich.table import Table

    catalog = _catalog()
    rows = [_summary(a, catalog) for a in catalog.agents()]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="agents")
    for column in ("name", "version", "model", "tools", "output", "description"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "version"))
    for row in rows:
        name = f"{row['name']} (default)" if row["default"] else row["name"]
        table.add_row(
            name,
            row["version"],
            row["model"] or "-",
            ", ".join(row["tools"]) or "(none)",
            "JSON schema" if row["structured_output"] else "text",
            row["description"],
        )
    console.print(table)


@agents_app.command("show")
def show_agent(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
) -> None:
    """One agent's full definition (as versioned) and its version."""
    from agentstream.agents import UnknownAgentError
    from agentstream.cli.errors import exit_with

    catalog = _catalog()
    try:
        agent = catalog.get(name)
    except UnknownAgentError as exc:
        exit_with(UnknownAgentError(f"{exc}; known: {', '.join(catalog.names())}"))
    definition = json.loads(agent.canonical())
    console.print_json(
        json.dumps(
            {"version": agent.version, "default": name == catalog.default, **definition},
            ensure_ascii=False,
        )
    )

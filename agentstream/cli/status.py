"""``agentstream status``: consumer lag, in-flight events, dead-letter counts, open breakers and
the members of the consumer groups (``streams/status.py`` reads them). Heavy modules are imported
inside the command (a fast ``--help``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import RenderableType

    from agentstream.streams.status import PipelineStatus

WorkersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--worker",
        help="A worker's metrics address (http://host:port) for its in-flight events; repeat "
        "for each worker.",
    ),
]


def status(
    workers: WorkersOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show consumer lag, in-flight events, dead-letter counts, breakers and group members."""
    import asyncio

    from agentstream.cli.runtime import console, load_cli_settings
    from agentstream.streams.status import collect_status

    settings = load_cli_settings()
    report = asyncio.run(collect_status(settings, workers or []))
    if as_json:
        console.print(json.dumps(status_dict(report), indent=2, default=str), markup=False)
    else:
        for part in status_tables(report):
            console.print(part)
    raise typer.Exit(1 if report.problems else 0)


def status_dict(report: PipelineStatus) -> dict[str, Any]:
    return {
        **asdict(report),
        "lag_by_topic": report.lag_by_topic(),
        "in_flight": report.in_flight,
        "open_breakers": [b.key for b in report.open_breakers],
    }


def status_tables(report: PipelineStatus) -> list[RenderableType]:
    lag = _table(
        f"Consumer lag (group {report.group})",
        ["topic", "partition", "high-water", "committed", "lag"],
        [
            [x.topic, x.partition, x.high_water, "-" if x.committed is None else x.committed, x.lag]
            for x in report.lag
        ],
    )
    dlq = _table("Dead-letter topics", ["topic", "records"], sorted(report.dead_letters.items()))
    breakers = _table(
        "Circuit breakers (state shared in Redis)",
        ["breaker", "state", "last failure"],
        [[b.key, b.state, b.last_failure or ""] for b in report.breakers],
    )
    members = _table(
        "Group members",
        ["group", "client", "host", "member id"],
        [[m.group, m.client_id, m.host, m.member_id] for m in report.members],
    )
    parts: list[RenderableType] = [lag, dlq, breakers, members]
    if report.workers:
        rows = [
            [
                w.url,
                w.status,
                ", ".join(f"{k} {v}" for k, v in w.in_flight.items()),
                "; ".join(w.reasons),
            ]
            for w in report.workers
        ]
        parts.append(_table("Workers", ["worker", "status", "in flight", "reasons"], rows))
    parts.extend(f"[red]could not read {p}[/red]" for p in report.problems)
    return parts


def _table(title: str, columns: list[str], rows: Iterable[Sequence[object]]) -> RenderableType:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row))
    return table

"""``agentstream dlq list|show|replay``: inspect dead-letter topics and replay their records.

Replays are safe to repeat: the pipeline answers a request_id once (dedupe) and the step journal
never repeats a completed LLM call or tool effect. ``--id`` labels a replay run (header
``agentstream-replay-id``) so its records can be told apart downstream.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, err_console, load_cli_settings

if TYPE_CHECKING:  # imported in the commands: `agentstream --help` stays fast
    from agentstream.config import Settings
    from agentstream.exceptions import AgentStreamError
    from agentstream.streams.replay import DlqSummary, ReplayFilter, ReplaySummary

dlq_app = typer.Typer(help="Inspect and replay dead-letter topics.", no_args_is_help=True)

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

ErrorCodeOpt = Annotated[
    list[str] | None,
    typer.Option("--error-code", "-c", help="Only records with this error code (repeatable)."),
]
ErrorClassOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--error-class", help="Only this exception class, bare or qualified (repeatable)."
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Dead-lettered at or after: ISO time, epoch ms, or an age like 30m, 2h."),
]
UntilOpt = Annotated[
    str | None, typer.Option(help="Dead-lettered before: ISO time, epoch ms, or an age.")
]
SessionOpt = Annotated[
    list[str] | None, typer.Option("--session", help="Only this record key (repeatable).")
]
TenantOpt = Annotated[
    list[str] | None, typer.Option("--tenant", help="Only this decoded tenant_id (repeatable).")
]


def parse_time(text: str, *, now: float | None = None) -> int:
    """Epoch milliseconds from ISO 8601 (naive = UTC), epoch milliseconds, or an age (``2h``)."""
    raw = text.strip()
    match = _RELATIVE.match(raw)
    if match:
        age_s = float(match.group(1)) * _UNIT_S[match.group(2)]
        return int(((time.time() if now is None else now) - age_s) * 1000)
    if raw.isascii() and raw.isdigit():
        return int(raw)
    try:
        when = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise typer.BadParameter(
            f"not a time: {text!r} (ISO 8601, epoch ms, or 30m/2h/1d)"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def build_filter(
    codes: list[str] | None,
    classes: list[str] | None,
    since: str | None,
    until: str | None,
    sessions: list[str] | None,
    tenants: list[str] | None,
) -> ReplayFilter:
    from agentstream.streams.replay import ReplayFilter

    return ReplayFilter(
        error_codes=frozenset(codes or ()),
        error_classes=frozenset(classes or ()),
        since_ms=parse_time(since) if since else None,
        until_ms=parse_time(until) if until else None,
        sessions=frozenset(sessions or ()),
        tenants=frozenset(tenants or ()),
    )


def _settings() -> Settings:
    """The settings, and Kafka reachable: else one line naming the setting (cli/errors.py)."""
    from agentstream.streams.preflight import kafka_topics

    settings = load_cli_settings()
    asyncio.run(kafka_topics(settings))
    return settings


def _fail(exc: AgentStreamError) -> typer.Exit:
    err_console.print(str(exc), style="red", markup=False)
    return typer.Exit(1)


def _top(counter: Counter[str], limit: int = 4) -> str:
    items = counter.most_common()
    shown = ", ".join(f"{name} {count}" for name, count in items[:limit])
    return shown + (f", +{len(items) - limit} more" if len(items) > limit else "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


@dlq_app.command("list")
def list_(
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Dead-letter topic (repeatable). Default: all."),
    ] = None,
) -> None:
    """Dead-letter topics with record counts and a breakdown by error code and class."""
    from rich.table import Table

    from agentstream.exceptions import AgentStreamError
    from agentstream.streams.replay import summarize

    settings = _settings()
    try:
        summaries: list[DlqSummary] = asyncio.run(summarize(settings, topic or None))
    except AgentStreamError as exc:
        raise _fail(exc) from exc
    table = Table(
        "topic", "records", "by error code", "by error class", "from", title="Dead-letter topics"
    )
    for s in summaries:
        table.add_row(
            s.topic, str(s.records), _top(s.by_code), _top(s.by_class), _top(s.by_origin, 2)
        )
    console.print(table)
    if not summaries:
        console.print(f"no topics ending in {settings.topics.dlq_suffix!r}")


@dlq_app.command("show")
def show(
    topic: Annotated[str, typer.Argument(help="Dead-letter topic, e.g. agent.requests.dlq.")],
    limit: Annotated[int, typer.Option("--max", help="Print at most this many (0 = all).")] = 20,
    error_code: ErrorCodeOpt = None,
    error_class: ErrorClassOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    session: SessionOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Print records as JSON lines: position, key, headers, and the value decoded with the
    origin topic's schema (or why it could not be)."""
    from agentstream.exceptions import AgentStreamError
    from agentstream.schemas.codec import codec_from_settings
    from agentstream.streams.replay import matching

    settings = _settings()
    filter_ = build_filter(error_code, error_class, since, until, session, tenant)

    async def main() -> None:
        codec = codec_from_settings(settings)
        await codec.prepare()
        shown = 0
        try:
            async for record, value, why in matching(settings, topic, codec, filter_):
                out: dict[str, Any] = {
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.session,
                    "error_code": record.error_code,
                    "headers": record.meta,
                }
                if value is not None:
                    out["value"] = value
                else:
                    out["undecodable"] = why
                    out["value_bytes"] = len(record.value)
                console.print(json.dumps(out, default=_jsonable), markup=False)
                shown += 1
                if limit and shown >= limit:
                    return
        finally:
            await codec.aclose()

    try:
        asyncio.run(main())
    except AgentStreamError as exc:
        raise _fail(exc) from exc


@dlq_app.command("replay")
def replay_cmd(
    topic: Annotated[str, typer.Argument(help="Dead-letter topic to replay.")],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Target topic (default: each record's original topic)."),
    ] = None,
    error_code: ErrorCodeOpt = None,
    error_class: ErrorClassOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    session: SessionOpt = None,
    tenant: TenantOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be sent; send nothing.")
    ] = False,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.001, help="At most this many records/s.")
    ] = None,
    replay_id: Annotated[
        str | None,
        typer.Option("--id", help="Label for this run (header agentstream-replay-id)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also send records that can only fail again (UNDECODABLE)."),
    ] = False,
    rerun_side_effects: Annotated[
        bool,
        typer.Option(
            "--rerun-side-effects",
            help="Also send TOOL_OUTCOME_UNKNOWN records: their side-effecting tool calls run "
            "again (check the listed tools first; --dry-run lists them).",
        ),
    ] = False,
) -> None:
    """Re-publish dead letters (key and value unchanged) to their original topic or --to.

    Records that can only fail again are refused unless --force; TOOL_OUTCOME_UNKNOWN records
    are held unless --rerun-side-effects, and their calls are listed either way."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from agentstream.exceptions import AgentStreamError
    from agentstream.schemas.codec import codec_from_settings
    from agentstream.streams.replay import replay

    settings = _settings()
    filter_ = build_filter(error_code, error_class, since, until, session, tenant)

    async def main() -> ReplaySummary:
        codec = codec_from_settings(settings)
        await codec.prepare()
        journal = _journal(settings)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=err_console, transient=False) as bar:
                task = bar.add_task("dry run" if dry_run else "replaying", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total or None)

                return await replay(
                    settings,
                    topic,
                    codec,
                    to=to,
                    filter_=filter_,
                    dry_run=dry_run,
                    rate=rate,
                    replay_id=replay_id,
                    progress=progress,
                    force=force,
                    rerun_side_effects=rerun_side_effects,
                    step_status=journal.status if journal is not None else None,
                )
        finally:
            await codec.aclose()
            if journal is not None:
                await journal.aclose()

    try:
        summary = asyncio.run(main())
    except AgentStreamError as exc:
        raise _fail(exc) from exc
    print_summary(summary)


def print_summary(summary: ReplaySummary) -> None:
    from rich.table import Table

    from agentstream.streams.replay import NOT_REPLAYABLE

    title = "Replay summary (dry run: nothing sent)" if summary.dry_run else "Replay summary"
    table = Table("", "", title=title, show_header=False)
    table.add_row("dead-letter topic", summary.topic)
    table.add_row("replay id", summary.replay_id)
    table.add_row("scanned", str(summary.scanned))
    table.add_row("matched filters", str(summary.matched))
    table.add_row("filtered out", str(summary.filtered_out))
    sent = sum(summary.by_target.values()) if summary.dry_run else summary.replayed
    table.add_row("would replay" if summary.dry_run else "replayed", str(sent))
    if summary.no_target:
        table.add_row("no original topic (skipped)", str(summary.no_target))
    if summary.no_payload:
        table.add_row("payload omitted, too large (skipped)", str(summary.no_payload))
    for target, count in sorted(summary.by_target.items()):
        table.add_row(f"  to {target}", str(count))
    for code, count in summary.by_code.most_common():
        table.add_row(f"  error {code}", str(count))
    for code, count in summary.refused.most_common():
        why = NOT_REPLAYABLE.get(code, "")
        table.add_row(f"refused {code} (--force sends them)", f"{count}: {why}")
    if summary.held_side_effects:
        table.add_row(
            "held: side effects may repeat (--rerun-side-effects)", str(summary.held_side_effects)
        )
    table.add_row("elapsed", f"{summary.elapsed_s:.2f}s")
    console.print(table)
    if summary.side_effects:
        print_side_effects(summary)


def print_side_effects(summary: ReplaySummary) -> None:
    """The tool calls of TOOL_OUTCOME_UNKNOWN records: what a replay would run again."""
    from rich.table import Table

    table = Table(
        "dead letter",
        "session",
        "tool",
        "read-only",
        "idempotency key",
        "journal",
        title="Tool calls whose outcome is unknown (a replay runs them again)",
    )
    for record in summary.side_effects:
        for call in record.calls or []:
            table.add_row(
                record.position,
                record.session or "",
                call.tool,
                "yes" if call.read_only else "no",
                "yes" if call.accepts_idempotency_key else "no",
                call.journal,
            )
    console.print(table)


class _Journal:
    """Step-journal lookups for the replay summary (closed with the Redis client)."""

    def __init__(self, settings: Settings) -> None:
        from agentstream.state.journal import StepJournal
        from agentstream.state.keys import Keys
        from agentstream.state.redis import redis_from_settings

        self._redis = redis_from_settings(settings)
        s = settings.state
        self._journal = StepJournal(
            self._redis, Keys(s.key_prefix), retention_s=s.journal_retention_s, owner="cli"
        )

    async def status(self, tenant_id: str, session_id: str, step_id: str) -> str | None:
        from redis.exceptions import RedisError

        try:
            return await self._journal.status(tenant_id, session_id, step_id)
        except RedisError:
            return "not checked (Redis unreachable)"

    async def aclose(self) -> None:
        await self._redis.aclose()


def _journal(settings: Settings) -> _Journal | None:
    return _Journal(settings) if settings.redis_url else None

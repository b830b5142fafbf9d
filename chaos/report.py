"""The results table (rich on a terminal, Markdown for docs/reliability.md) and a JSON dump."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.history import Verdict
from chaos.scenarios import ScenarioResult

COLUMNS = (
    "scenario",
    "requests",
    "answered once",
    "lost",
    "duplicated",
    "order violations",
    "dead letters",
    "error responses",
    "wrong answers",
    "history resets",
    "left claimed",
    "recovery",
    "took",
)


def row(result: ScenarioResult) -> list[str]:
    name = result.scenario.name
    took = f"{result.duration_s:.0f} s"
    v = result.verdict
    if v is None:
        return [name, *(["-"] * (len(COLUMNS) - 3)), f"error: {result.error}", took]
    return [
        name,
        str(v.requests - v.not_submitted),
        str(v.answered_once),
        str(v.lost),
        str(v.duplicated),
        str(v.order_violations),
        _counted(v.dead_letters, v.dead_letter_codes),
        _counted(sum(v.error_responses.values()), v.error_responses),
        str(v.wrong_answers),
        str(v.history_resets),
        "-" if v.claimed_after_answer is None else str(v.claimed_after_answer),
        _recovery(v),
        took,
    ]


def _recovery(v: Verdict) -> str:
    if v.recovery_s is not None:
        return f"{v.recovery_s:.1f} s"
    return "never" if v.lost else "-"


def _counted(total: int, codes: Counter[str]) -> str:
    if not total:
        return "0"
    detail = ", ".join(f"{code} {n}" for code, n in codes.most_common(3))
    return f"{total} ({detail})"


def print_table(results: Sequence[ScenarioResult], console: Console | None = None) -> None:
    table = Table(title="agentstream chaos run")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(*row(result), style="red" if result.failed else None)
    (console or Console()).print(table)


def markdown(results: Sequence[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines) + "\n"


def write_json(results: Sequence[ScenarioResult], path: Path) -> None:
    path.write_text(json.dumps([_as_json(r) for r in results], indent=2) + "\n")


def _as_json(result: ScenarioResult) -> dict[str, Any]:
    v = result.verdict
    out: dict[str, Any] = {
        "scenario": result.scenario.name,
        "fault": result.scenario.fault.what,
        "error": result.error,
        "duration_s": round(result.duration_s, 1),
        "fault_window_s": (
            round(result.fault_window[1] - result.fault_window[0], 2)
            if result.fault_window
            else None
        ),
        "submit_errors": result.submit_errors,
        "worker_warnings": dict(result.worker_events.most_common()),
    }
    if v is not None:
        out |= {
            "requests": v.requests,
            "not_submitted": v.not_submitted,
            "answered_once": v.answered_once,
            "lost": v.lost,
            "lost_request_ids": v.lost_ids,
            "duplicated": v.duplicated,
            "copies": v.copies,
            "order_violations": v.order_violations,
            "dead_letters": dict(v.dead_letter_codes),
            "error_responses": dict(v.error_responses),
            "wrong_answers": v.wrong_answers,
            "wrong": v.wrong,
            "history_resets": v.history_resets,
            "claimed_after_answer": v.claimed_after_answer,
            "recovery_s": v.recovery_s,
        }
    return out

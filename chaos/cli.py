"""``python -m chaos``: run the fault scenarios (``run``), list them (``list``), fuzz (``fuzz``)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from chaos.report import markdown, print_table, write_json
from chaos.scenarios import BY_NAME, SCENARIOS, RunOptions, ScenarioResult, run_scenario

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if Console().is_terminal else 200)


@app.command("list")
def list_scenarios() -> None:
    """The scenarios, with the broker each runs on and its fault."""
    for s in SCENARIOS:
        console.print(f"[bold]{s.name}[/bold] ({s.broker}): {s.fault.what}")


@app.command()
def run(
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", "-s", help="Scenario to run (repeatable).")
    ] = None,
    sessions: Annotated[
        int, typer.Option(min=1, help="Sessions per scenario.")
    ] = RunOptions.sessions,
    requests: Annotated[
        int, typer.Option(min=1, help="Requests per session.")
    ] = RunOptions.requests_per_session,
    rate: Annotated[float, typer.Option(min=0.1, help="Requests per second.")] = RunOptions.rate,
    stall: Annotated[
        float, typer.Option(help="Stop draining after this long without progress.")
    ] = 30.0,
    out: Annotated[Path, typer.Option(help="Run directory (logs, results.json).")] = Path(".chaos"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run scenarios (all by default); exit code 1 when one breaks a rule (docs/reliability.md)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # the harness's own clients log every refused connection during a fault
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = scenario or [s.name for s in SCENARIOS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {', '.join(unknown)}; see `python -m chaos list`",
            param_hint="--scenario",
        )
    options = RunOptions(sessions=sessions, requests_per_session=requests, rate=rate, stall_s=stall)
    run_dir = out.resolve() / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    results = asyncio.run(_run_all(names, options, run_dir))
    _finish(results, run_dir, time.monotonic() - started)


async def _run_all(names: list[str], options: RunOptions, run_dir: Path) -> list[ScenarioResult]:
    results = []
    for name in names:
        console.print(f"[bold]{name}[/bold]: {BY_NAME[name].fault.what}")
        result = await run_scenario(BY_NAME[name], options, run_dir / name)
        console.print(
            f"  done in {result.duration_s:.0f} s" + (" (FAILED)" if result.failed else "")
        )
        results.append(result)
    return results


def _finish(results: list[ScenarioResult], run_dir: Path, took_s: float) -> None:
    write_json(results, run_dir / "results.json")
    (run_dir / "results.md").write_text(markdown(results))
    print_table(results, console)
    console.print(f"total {took_s / 60:.1f} min; logs and results in {run_dir}")
    if any(r.failed for r in results):
        raise typer.Exit(1)


@app.command()
def fuzz(
    cases: Annotated[int, typer.Option(min=1, help="Cases in total, over all targets.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fuzz the codec, the validation stage and the DLQ header parser; exit 1 on a crash."""
    from chaos.fuzz import run_fuzz

    if not run_fuzz(cases, seed, console):
        raise typer.Exit(1)

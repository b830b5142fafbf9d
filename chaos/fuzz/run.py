"""Drive hypothesis outside pytest for a fixed number of cases per target; count the outcomes."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from agentstream.schemas.codec import AvroCodec
from agentstream.streams.retry import RetryForwarder
from chaos.fuzz import strategies as s
from chaos.fuzz.corpus import seed_records
from chaos.fuzz.targets import (
    ValidationHarness,
    Violation,
    decode_case,
    forward_case,
    header_case,
)

#: Share of the cases each target gets.
SHARES = {
    "codec: arbitrary bytes": 0.30,
    "codec: mutated records": 0.25,
    "dlq headers: parse and build": 0.20,
    "retry headers: forwarder": 0.05,
    "validation: AgentRequest fields": 0.12,
    "validation: arbitrary bytes": 0.04,
    "stages: mutated turns and tool calls": 0.04,
}
STAGE_CONTRACTS = ("GenerationTurn", "ToolCallBatch")
BAD = ("CRASH", "VIOLATION")
_NUMBERS = re.compile(r"-?\d+")


@dataclass(kw_only=True)
class TargetRun:
    name: str
    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    first_bad: dict[str, str] = field(default_factory=dict)

    def record(self, case: Callable[[Any], str], example: Any) -> None:
        self.cases += 1
        try:
            label = case(example)
        except Violation as exc:
            label = _NUMBERS.sub("N", f"VIOLATION: {str(exc)[:100]}")
        except Exception as exc:  # noqa: BLE001 - a crash is what the run looks for
            label = _NUMBERS.sub("N", f"CRASH: {type(exc).__name__}: {str(exc)[:80]}")
        self.outcomes[label] += 1
        if label.startswith(BAD) and label not in self.first_bad:
            self.first_bad[label] = repr(example)[:400]

    @property
    def bad(self) -> int:
        return sum(n for label, n in self.outcomes.items() if label.startswith(BAD))


def drive(strategy: st.SearchStrategy[Any], body: Callable[[Any], None], n: int, seed: int) -> None:
    """Run ``body`` on ``n`` examples of ``strategy`` (fewer if hypothesis exhausts it)."""

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(example: Any) -> None:
        body(example)

    run()


def run_fuzz(cases: int, seed: int, console: Console) -> bool:
    logging.disable(logging.CRITICAL)  # the stages log every refusal; the counts say it all
    runs = [TargetRun(name=name) for name in SHARES]
    quota = {run.name: max(1, int(cases * SHARES[run.name])) for run in runs}
    with asyncio.Runner() as loop:
        harness = ValidationHarness()
        loop.run(harness.__aenter__())
        seeds = loop.run(seed_records(harness.pipeline))
        forwarder = RetryForwarder()
        codec = AvroCodec()
        bodies: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], str]]] = {
            "codec: arbitrary bytes": (
                st.tuples(s.contract_names, s.wire_bytes),
                lambda x: decode_case(codec, *x),
            ),
            "codec: mutated records": (s.mutated(seeds), lambda x: decode_case(codec, *x)),
            "dlq headers: parse and build": (
                st.tuples(s.headers(), st.integers(256, 4096)),
                lambda x: header_case(*x),
            ),
            "retry headers: forwarder": (
                s.headers(),
                lambda x: loop.run(forward_case(forwarder, x)),
            ),
            "validation: AgentRequest fields": (
                st.tuples(s.agent_requests(), s.headers()),
                lambda x: loop.run(harness.request_case(*x)),
            ),
            "validation: arbitrary bytes": (
                s.wire_bytes,
                lambda x: loop.run(harness.bytes_case(x)),
            ),
            "stages: mutated turns and tool calls": (
                s.mutated(seeds, STAGE_CONTRACTS),
                lambda x: loop.run(harness.stage_case(*x)),
            ),
        }
        try:
            for run in runs:
                strategy, case = bodies[run.name]
                started = time.perf_counter()
                drive(strategy, functools.partial(run.record, case), quota[run.name], seed)
                run.seconds = time.perf_counter() - started
                console.print(
                    f"{run.name}: {run.cases} cases in {run.seconds:.1f} s "
                    f"({run.cases / max(run.seconds, 1e-9):.0f}/s)"
                )
        finally:
            loop.run(harness.__aexit__(None, None, None))
    _print(runs, console)
    return not any(run.bad for run in runs)


def _print(runs: list[TargetRun], console: Console) -> None:
    total = sum(r.cases for r in runs)
    seconds = sum(r.seconds for r in runs)
    table = Table(
        title=f"fuzz: {total} cases in {seconds:.0f} s ({total / max(seconds, 1e-9):.0f}/s)"
    )
    for column in ("target", "cases", "cases/s", "outcome", "count"):
        table.add_column(column, overflow="fold")
    for run in runs:
        rate = f"{run.cases / max(run.seconds, 1e-9):.0f}"
        for i, (label, n) in enumerate(run.outcomes.most_common()):
            first = i == 0
            table.add_row(
                run.name if first else "",
                str(run.cases) if first else "",
                rate if first else "",
                label,
                str(n),
                style="red" if label.startswith(BAD) else None,
            )
    console.print(table)
    for run in runs:
        for label, example in run.first_bad.items():
            console.print(f"[red]{run.name}[/red] {label}\n  first input: {example}")

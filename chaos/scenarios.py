"""The scenarios, and one scenario's run: stack up, warm up, load with a fault, drain, check.

A run of a scenario:

1. a fresh stack (broker, Redis, three workers; :mod:`chaos.stack`);
2. warm-up requests (not counted) until every worker has answered one, so the consumer group
   is settled before the load starts;
3. the load (:mod:`chaos.load`), with the fault injected ``fault_at`` of the way in;
4. the drain: until every request has a terminal outcome, nothing new arrived for
   ``stall_s``, or ``drain_max_s`` passed;
5. the check (:mod:`chaos.history`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agentstream.client import AgentClient
from chaos import faults
from chaos.faults import Fault
from chaos.history import Observer, Verdict, check, claimed_after_answer, terminal_times
from chaos.load import TENANT, LoadGenerator, LoadPlan
from chaos.stack import BrokerKind, Stack

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_S = 120.0
_DIGITS = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    broker: BrokerKind
    fault: Fault


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="baseline",
        broker="tansu",
        fault=Fault(name="none", what="no fault (control)", inject=faults.no_fault),
    ),
    Scenario(
        name="worker-kill9",
        broker="tansu",
        fault=Fault(
            name="kill -9 worker",
            what="kill -9 of one of 3 workers; a replacement starts 10 s later",
            inject=faults.kill_worker,
        ),
    ),
    Scenario(
        name="broker-sigstop",
        broker="tansu",
        fault=Fault(
            name="SIGSTOP broker",
            what="SIGSTOP of the broker (Tansu) for 5 s, then SIGCONT",
            inject=faults.pause(faults.broker_pid, 5.0),
        ),
    ),
    Scenario(
        name="redis-sigstop",
        broker="tansu",
        fault=Fault(
            name="SIGSTOP Redis",
            what="SIGSTOP of Redis for 3 s, then SIGCONT",
            inject=faults.pause(faults.redis_pid, 3.0),
        ),
    ),
    Scenario(
        name="redis-restart-empty",
        broker="tansu",
        fault=Fault(
            name="Redis restarted empty",
            what="Redis stopped, 1 s later a fresh one (no data) on the same port",
            inject=faults.restart_redis_empty(1.0),
        ),
    ),
    Scenario(
        name="redis-client-kill",
        broker="tansu",
        fault=Fault(
            name="CLIENT KILL",
            what="CLIENT KILL TYPE normal 10 times, 0.5 s apart: every Redis connection "
            "closed, data kept",
            inject=faults.kill_redis_clients(10, 0.5),
        ),
    ),
    Scenario(
        name="kafka-broker-kill",
        broker="apache-cluster",
        fault=Fault(
            name="kill -9 Kafka broker",
            what="Apache Kafka, 3 brokers, RF 3: kill -9 of the group coordinator, back 10 s later",
            inject=faults.kill_kafka_coordinator(10.0),
        ),
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    sessions: int = 50
    requests_per_session: int = 25
    rate: float = 20.0
    fault_at: float = 0.33
    """When the fault starts, as a fraction of the load's duration."""
    stall_s: float = 30.0
    drain_max_s: float = 120.0
    workers: int = 3
    seed: int = 0


@dataclass(kw_only=True)
class ScenarioResult:
    scenario: Scenario
    verdict: Verdict | None = None
    error: str | None = None
    fault_window: tuple[float, float] | None = None
    duration_s: float = 0.0
    worker_events: Counter[str] = field(default_factory=Counter)
    submit_errors: int = 0

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.verdict is not None and self.verdict.failed)


async def run_scenario(scenario: Scenario, options: RunOptions, run_dir: Path) -> ScenarioResult:
    result = ScenarioResult(scenario=scenario)
    started = time.monotonic()
    try:
        await _run(scenario, options, run_dir, result)
    except Exception as exc:
        log.exception("scenario %s failed to run", scenario.name)
        result.error = f"{type(exc).__name__}: {exc}"
    result.duration_s = time.monotonic() - started
    result.worker_events = worker_events(run_dir)
    return result


async def _run(
    scenario: Scenario, options: RunOptions, run_dir: Path, result: ScenarioResult
) -> None:
    plan = LoadPlan(
        sessions=options.sessions,
        requests_per_session=options.requests_per_session,
        rate=options.rate,
        seed=options.seed,
        run_id=scenario.name,
    )
    stack = Stack(run_dir=run_dir, broker=scenario.broker, workers=options.workers)
    async with (
        stack,
        AgentClient(stack.settings) as client,
        Observer(settings=stack.settings) as seen,
    ):
        await warm_up(client, options.workers)
        generator = LoadGenerator(client=client, plan=plan)
        load = asyncio.create_task(generator.run())
        await asyncio.sleep(plan.duration_s * options.fault_at)
        result.fault_window = await scenario.fault.inject(stack)
        log.info("%s: fault window %.1f s", scenario.name, _length(result.fault_window))
        await load
        await drain(seen, generator, options)
        result.submit_errors = generator.submit_errors
        result.verdict = verdict = check(
            generator.submitted, seen.responses, seen.dead_letters, result.fault_window[1]
        )
        answered = set(terminal_times(seen.responses, seen.dead_letters))
        sessions = {s.request.session_id for s in generator.submitted.values()}
        verdict.claimed_after_answer = await claimed_after_answer(
            stack.settings, TENANT, sessions, answered
        )


async def warm_up(client: AgentClient, workers: int) -> None:
    """Ask until ``workers`` different workers have answered (the group has settled)."""
    answered_by: set[str] = set()
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    round_ = 0
    while len(answered_by) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(answered_by)} of {workers} workers answered in warm-up")
        asks = [
            client.ask("hello", session_id=f"warm-{round_}-{i}", user_id="u", tenant_id="chaos")
            for i in range(16)
        ]
        for answer in await asyncio.gather(*asks, return_exceptions=True):
            if not isinstance(answer, BaseException):
                answered_by.add(answer.metadata.get("worker", ""))
        round_ += 1


async def drain(seen: Observer, generator: LoadGenerator, options: RunOptions) -> None:
    """Wait until every submitted request has a terminal outcome, or progress stops."""
    wanted = {rid for rid, s in generator.submitted.items() if s.sent_at is not None}
    deadline = time.monotonic() + options.drain_max_s
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = wanted & terminal_times(seen.responses, seen.dead_letters).keys()
        if len(done) == len(wanted):
            return
        if len(done) != last_count:
            last_count, last_change = len(done), time.monotonic()
        elif time.monotonic() - last_change > options.stall_s:
            return
        await asyncio.sleep(0.5)


def worker_events(run_dir: Path) -> Counter[str]:
    """Warning and error lines of the workers' JSON logs, by event (what the operator saw)."""
    events: Counter[str] = Counter()
    for path in sorted(run_dir.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                events[_DIGITS.sub("N", str(entry.get("event", "?")))] += 1
    return events


def _length(window: tuple[float, float]) -> float:
    return window[1] - window[0]

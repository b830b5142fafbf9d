"""How long sessions pause when one worker of a group is killed with kill -9.

Three worker processes share the pipeline's consumer group. Every session (default 24) sends a
request, waits for the answer, sleeps --think seconds and sends the next, so each session's answers
form a steady stream. After --warmup seconds one worker gets SIGKILL. For every session the bench
finds the longest gap between answers from the kill on:

- sessions of the killed worker cannot be answered until the group notices (session timeout)
  and hands their partitions to a survivor: their gap is detection + rebalance;
- sessions of surviving workers pause only if the rebalance takes their partitions away too
  (Faust and aiokafka use the eager protocol: every member gives up every partition).

A session counts as a survivor's when it got an answer between 0.3 s after the kill and half the
session timeout (the killed worker's sessions get none then).

    .venv/bin/python bench/rebalance_pause.py [--broker apache-kafka] [--session-timeout 10] \
        [--heartbeat 1] [--rebalance-timeout 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import time
from typing import Any

from _harness import percentile, start_worker

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded import DevStack


async def run(args: argparse.Namespace) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    async with DevStack(base, broker=args.broker) as live:
        kafka = {
            "session_timeout_s": args.session_timeout,
            "heartbeat_interval_s": args.heartbeat,
            "rebalance_timeout_s": args.rebalance_timeout,
            "commit_interval_s": 1.0,
            "fetch_max_wait_ms": 5 if args.broker == "tansu" else 500,
        }
        settings = live.model_copy(update={"kafka": live.kafka.model_copy(update=kafka)})
        env = {"AGENTSTREAM_TIMEOUTS__SHUTDOWN_GRACE_S": str(args.shutdown_grace)}
        workers = [start_worker(settings, env) for _ in range(args.workers)]
        try:
            await _measure(settings, workers, args)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.terminate()
            for worker in workers:
                worker.wait(timeout=60)


async def _measure(settings: Settings, workers: list[Any], args: argparse.Namespace) -> None:
    answers: dict[str, list[float]] = {f"s{i}": [] for i in range(args.sessions)}
    stop = asyncio.Event()
    async with AgentClient(settings) as client:
        # every worker has joined and the group is stable: all sessions answered twice in a row
        ready_deadline = time.monotonic() + 180
        for _ in range(2):
            await asyncio.gather(
                *(
                    client.ask("hello", session_id=s, user_id="u", tenant_id="t", timeout=120)
                    for s in answers
                )
            )
        if time.monotonic() > ready_deadline:
            raise SystemExit("the group did not settle within 180 s")

        async def session(name: str) -> None:
            while not stop.is_set():
                try:
                    await client.ask(
                        "hello", session_id=name, user_id="u", tenant_id="t", timeout=120
                    )
                except TimeoutError:
                    continue
                answers[name].append(time.monotonic())
                await asyncio.sleep(args.think)

        tasks = [asyncio.create_task(session(name)) for name in answers]
        await asyncio.sleep(args.warmup)
        victim = workers[0]
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.sleep(args.observe)
        stop.set()
        await asyncio.gather(*tasks)

    survivors_window = (killed_at + 0.3, killed_at + args.session_timeout / 2)
    gaps: dict[str, float] = {}
    recovered: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for name, times in answers.items():
        before = [t for t in times if t <= killed_at]
        after = [t for t in times if t > killed_at]
        series = ([before[-1]] if before else [killed_at]) + after
        gaps[name] = max((b - a for a, b in itertools.pairwise(series)), default=args.observe)
        if not after:
            gaps[name] = args.observe
        stalled_from = next((t for t in series if t > killed_at), killed_at)
        recovered[name] = stalled_from - killed_at
        in_window = any(survivors_window[0] <= t <= survivors_window[1] for t in after)
        kinds[name] = "survivor" if in_window else "killed"

    print(f"broker                 {args.broker}")
    print(
        f"workers                {args.workers} (one killed with SIGKILL after {args.warmup:g} s)"
    )
    print(f"sessions               {args.sessions}, think time {args.think:g} s")
    print(
        f"session / heartbeat / rebalance timeout  {args.session_timeout:g} s / "
        f"{args.heartbeat:g} s / {args.rebalance_timeout:g} s"
    )
    for kind in ("killed", "survivor"):
        values = [gaps[n] for n in gaps if kinds[n] == kind]
        if not values:
            print(f"{kind + ' sessions':22} none")
            continue
        paused = sum(1 for v in values if v > 1.0)
        p50 = percentile(values, 0.5)
        print(
            f"{kind + ' sessions':22} {len(values):3d}: longest gap p50 {p50:.2f} s"
            f", max {max(values):.2f} s; {paused} paused > 1 s"
        )
    normal = [
        b - a for times in answers.values() for a, b in itertools.pairwise(times) if b <= killed_at
    ]
    if normal:
        print(
            f"gap before the kill    p50 {percentile(normal, 0.5):.2f} s, max {max(normal):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=("apache-kafka", "tansu"), default="apache-kafka")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=24)
    parser.add_argument("--think", type=float, default=0.2)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--observe", type=float, default=30.0)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--rebalance-timeout", type=float, default=10.0)
    parser.add_argument("--shutdown-grace", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

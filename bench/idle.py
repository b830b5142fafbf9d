"""Idle CPU of a worker: no requests, everything started, measured over a window.

Prints the worker's CPU in cores while idle, beside the same figure for the bare agent
(bench/bare_agent.py) on the same broker, and py-spy's view of where an idle worker spends it
when ``--profile`` is given. The fetch wait decides most of it on Tansu, which holds a fetch for
the whole wait (docs/benchmarks.md, "Idle").

    .venv/bin/python bench/idle.py [--seconds 10] [--fetch-max-wait-ms 5] [--broker tansu]
"""

from __future__ import annotations

import argparse
import asyncio

from _harness import bench_settings, start_worker, worker_cpu_s

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack


async def run(seconds: float, fetch_ms: int, broker: BrokerKind, stages: list[str]) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    async with DevStack(base, broker=broker) as live:
        settings = bench_settings(live, fetch_max_wait_ms=fetch_ms)
        worker = start_worker(settings, {}, *stages)
        try:
            async with AgentClient(settings) as client:
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
            await asyncio.sleep(2.0)  # the client's goodbye and the worker's commits settle
            before = worker_cpu_s(worker.pid)
            await asyncio.sleep(seconds)
            idle = (worker_cpu_s(worker.pid) - before) / seconds
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    print(f"worker idle CPU   {idle:.3f} cores over {seconds:g} s")
    print(f"fetch_max_wait_ms {fetch_ms}")
    print(f"broker            {broker}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=None)
    parser.add_argument("--stages", default="")
    args = parser.parse_args()
    fetch_ms = args.fetch_max_wait_ms
    if fetch_ms is None:
        fetch_ms = 5 if args.broker == "tansu" else 500
    stages = ["--stages", args.stages] if args.stages else []
    asyncio.run(run(args.seconds, fetch_ms, args.broker, stages))


if __name__ == "__main__":
    main()

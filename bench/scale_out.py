"""Scale-out: 1, 2 and 3 worker processes on a CPU-bound workload, same broker, same run.

Each round uses its own topics and consumer group: N worker processes join, then REQUESTS
requests on as many sessions go through with a short model latency (the work is CPU, not
waiting). Prints throughput, total worker CPU per request and both as a ratio to the one-worker
round. On a machine with C cores shared by the broker, Redis and the bench client, throughput
can grow only while the workers have idle cores to use.

    .venv/bin/python bench/scale_out.py [--requests 3000] [--latency 0.01] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass

from _harness import bench_settings, start_worker, worker_cpu_s

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack
from agentstream.streams.admin import ensure_topics
from agentstream.streams.status import group_members

NAMES = (
    "requests",
    "generation",
    "tool_calls",
    "responses",
    "errors",
    "metrics",
    "approvals",
    "approval_decisions",
    "approval_audit",
    "delegation_results",
)


@dataclass(frozen=True)
class Round:
    workers: int
    throughput: float
    cpu_ms_per_request: float


def round_settings(live: Settings, n: int, fetch_ms: int) -> Settings:
    base = bench_settings(live, fetch_max_wait_ms=fetch_ms)
    topics = base.topics.model_copy(
        update={name: f"scale{n}.{getattr(base.topics, name)}" for name in NAMES}
    )
    state = base.state.model_copy(update={"key_prefix": f"scale{n}"})
    return base.model_copy(update={"topics": topics, "consumer_group": f"scale{n}", "state": state})


def env_of(settings: Settings, latency: float, in_flight: int) -> dict[str, str]:
    env = {
        "AGENTSTREAM_LLM__LOCAL_LATENCY_S": str(latency),
        "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT": str(in_flight),
        "AGENTSTREAM_CONSUMER_GROUP": settings.consumer_group,
        "AGENTSTREAM_STATE__KEY_PREFIX": settings.state.key_prefix,
    }
    for name in NAMES:
        env[f"AGENTSTREAM_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    return env


async def members(settings: Settings) -> int:
    return len(await group_members(settings, [settings.consumer_group]))


async def one_round(
    live: Settings, n: int, requests: int, latency: float, in_flight: int, fetch_ms: int
) -> Round:
    settings = round_settings(live, n, fetch_ms)
    await ensure_topics(settings)
    procs = [start_worker(settings, env_of(settings, latency, in_flight)) for _ in range(n)]
    try:
        deadline = time.monotonic() + 120
        while await members(settings) < n:  # every worker is in the group
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} workers did not all join")
            await asyncio.sleep(0.5)
        async with AgentClient(settings) as client:
            warm = [
                new_request("hi", session_id=f"w{i}", user_id="u", tenant_id="t") for i in range(64)
            ]
            await asyncio.gather(*(client.request(r, timeout=120) for r in warm))
            batch = [
                new_request(f"add {i} and 1", session_id=f"s{i}", user_id="u", tenant_id="t")
                for i in range(requests)
            ]
            futures = [client.expect(r["request_id"]) for r in batch]
            before = sum(worker_cpu_s(p.pid) for p in procs)
            start = time.perf_counter()
            for request in batch:
                await client.submit(request)
            await asyncio.wait_for(asyncio.gather(*futures), timeout=600)
            elapsed = time.perf_counter() - start
            cpu = sum(worker_cpu_s(p.pid) for p in procs) - before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    return Round(workers=n, throughput=requests / elapsed, cpu_ms_per_request=cpu / requests * 1000)


async def run(
    counts: list[int], requests: int, latency: float, in_flight: int, broker: BrokerKind
) -> None:
    fetch_ms = 5 if broker == "tansu" else 500
    async with DevStack(
        Settings(kafka_bootstrap_servers=None, redis_url=None), broker=broker
    ) as live:
        rounds = [await one_round(live, n, requests, latency, in_flight, fetch_ms) for n in counts]
    first = rounds[0]
    print(f"requests {requests} per round, model latency {latency:g} s, in flight {in_flight}")
    print("workers  req/s     x1 req/s   CPU ms/req  x1 CPU")
    for r in rounds:
        print(
            f"{r.workers:7}  {r.throughput:8.1f}  {r.throughput / first.throughput:8.2f}  "
            f"{r.cpu_ms_per_request:10.2f}  {r.cpu_ms_per_request / first.cpu_ms_per_request:6.2f}"
        )
    print(f"machine  {os.cpu_count()} cores (shared with the broker, Redis and the client)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    asyncio.run(run(counts, args.requests, args.latency, args.in_flight, args.broker))


if __name__ == "__main__":
    main()

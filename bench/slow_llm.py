"""Throughput and CPU with a slow model, against a bare agent measured in the same run.

5,000 requests on 5,000 sessions, local model latency 1.0 s, 500 in flight, one worker process
running all stages, embedded broker + Redis on this machine. First a bare Faust agent that
sleeps and forwards (bench/bare_agent.py) carries the same number of records with the same
latency and concurrency on the same broker, consuming with the worker's Kafka settings (the same
fetch wait); then agentstream. Prints, for both: throughput
against the ideal (in flight / latency), steady worker CPU per request, and agentstream's CPU per
request as a multiple of the bare agent's; then agentstream's Redis commands per request (INFO
commandstats deltas, Lua-internal calls included), script calls per request, broker and Redis
CPU, the worker's idle CPU, latency percentiles and peak RSS.

Targets (issue 18), as in-run multiples: CPU per request at most 2.5x the bare agent's;
throughput ratio >= 0.90; RSS <= 250 MB.

    .venv/bin/python bench/slow_llm.py [--requests 5000] [--in-flight 500] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from _harness import bench_settings, peak_rss_mb, percentile, start_worker, worker_cpu_s
from bare_agent import Baseline, measure
from redis.asyncio import Redis

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack

IDLE_S = 3.0
READS = "server reads"  # not a command: kept apart in the report


async def commandstats(redis: Redis) -> dict[str, int]:
    """Calls per command, and the server's socket reads (``reads``: one per client write that
    reached it, so about the round trips; Redis >= 6)."""
    info: dict[str, Any] = await redis.info("commandstats")
    stats: dict[str, Any] = await redis.info("stats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
    return {**calls, READS: int(stats.get("total_reads_processed", 0))}


async def run(
    requests: int,
    in_flight: int,
    latency: float,
    fetch_ms: int,
    broker: BrokerKind,
    stages: str = "",
) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    stack = DevStack(base, broker=broker)
    async with stack as live:
        settings = bench_settings(live, fetch_max_wait_ms=fetch_ms)
        bare = await measure(
            settings,
            records=requests,
            concurrency=in_flight,
            latency=latency,
            run_dir=settings.run_dir,
            idle_s=IDLE_S,
        )
        broker_pid = stack.kafka.pid if stack.kafka else None
        redis = Redis.from_url(settings.redis_url or "")
        worker = start_worker(
            settings,
            {
                "AGENTSTREAM_LLM__LOCAL_LATENCY_S": str(latency),
                "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT": str(in_flight),
            },
            *(["--stages", stages] if stages else []),
        )
        print(f"agentstream worker pid {worker.pid}", file=sys.stderr, flush=True)
        try:
            async with AgentClient(settings) as client:
                # warm-up: the worker has joined the group and answers
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
                idle_from = worker_cpu_s(worker.pid)
                await asyncio.sleep(IDLE_S)
                idle_cores = (worker_cpu_s(worker.pid) - idle_from) / IDLE_S
                batch = [
                    new_request(f"hello {i}", session_id=f"s{i}", user_id="u", tenant_id="t")
                    for i in range(requests)
                ]
                sent: dict[str, float] = {}
                latencies: list[float] = []
                done = asyncio.Event()

                async def collect() -> None:
                    async for response in client.responses():
                        t0 = sent.get(response.request_id)
                        if t0 is not None:
                            latencies.append(time.perf_counter() - t0)
                            if len(latencies) == requests:
                                done.set()
                                return

                collector = asyncio.create_task(collect())
                await asyncio.sleep(0)
                stats_before = await commandstats(redis)
                cpu_before = worker_cpu_s(worker.pid)
                broker_before = worker_cpu_s(broker_pid) if broker_pid else 0.0
                redis_before = worker_cpu_s(stack.redis.pid) if stack.redis else 0.0
                start = time.perf_counter()
                for request in batch:
                    sent[request["request_id"]] = time.perf_counter()
                    await client.submit(request)
                await asyncio.wait_for(done.wait(), timeout=600)
                elapsed = time.perf_counter() - start
                cpu = worker_cpu_s(worker.pid) - cpu_before
                broker_cpu = (worker_cpu_s(broker_pid) if broker_pid else 0.0) - broker_before
                redis_cpu = (worker_cpu_s(stack.redis.pid) if stack.redis else 0.0) - redis_before
                await collector
                await asyncio.sleep(0.5)  # usage is written behind (admission.usage_flush_s)
                stats_after = await commandstats(redis)
            rss = peak_rss_mb(worker.pid)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            await redis.aclose()
    calls = {k: stats_after.get(k, 0) - stats_before.get(k, 0) for k in stats_after}
    report(
        bare=bare,
        requests=requests,
        in_flight=in_flight,
        latency=latency,
        elapsed=elapsed,
        cpu=cpu,
        idle_cores=idle_cores,
        calls=calls,
        latencies=latencies,
        extra={
            "broker CPU": f"{broker_cpu:.1f} s ({broker})",
            "redis-server CPU": f"{redis_cpu:.1f} s",
            "worker peak RSS": f"{rss:.0f} MB   (target <= 250 MB)",
            "fetch_max_wait_ms": f"{fetch_ms} (worker and bare agent)",
            "machine": f"{os.cpu_count()} cores",
        },
    )


def report(
    *,
    bare: Baseline,
    requests: int,
    in_flight: int,
    latency: float,
    elapsed: float,
    cpu: float,
    idle_cores: float,
    calls: dict[str, int],
    latencies: list[float],
    extra: dict[str, str],
) -> None:
    reads = calls.pop(READS, 0)
    ideal = in_flight / latency if latency else float("inf")
    throughput = requests / elapsed
    per_request = cpu / requests * 1000
    commands = sum(calls.values()) / requests
    scripts = (calls.get("evalsha", 0) + calls.get("eval", 0)) / requests
    top = ", ".join(
        f"{k} {v / requests:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:8]
    )
    print(f"requests              {requests} on {requests} sessions")
    print(f"model latency         {latency:.2f} s, in flight {in_flight}")
    print("                      bare agent    agentstream")
    print(f"throughput (req/s)    {bare.throughput:10.1f}    {throughput:11.1f}")
    print(
        f"ratio to ideal        {bare.throughput / ideal:10.3f}    {throughput / ideal:11.3f}"
        "   (target >= 0.90)"
    )
    print(f"CPU per request (ms)  {bare.cpu_ms_per_record:10.2f}    {per_request:11.2f}")
    print(f"idle CPU (cores)      {bare.idle_cores:10.3f}    {idle_cores:11.3f}")
    print(
        f"CPU multiple          {per_request / bare.cpu_ms_per_record:.2f}x the bare agent's"
        "   (target <= 2.5x)"
    )
    # the same without what each would have burnt idle over the run (polling at the fetch wait):
    # a second view, which the fetch wait and the broker move less
    net = (cpu - idle_cores * elapsed) / requests * 1000
    bare_net = (bare.cpu_s - bare.idle_cores * bare.elapsed_s) / bare.records * 1000
    print(f"net of idle (ms)      {bare_net:10.2f}    {net:11.2f}   multiple {net / bare_net:.2f}x")
    print(f"redis commands/req    {commands:.1f} (Lua-internal included): {top}")
    print(f"redis scripts/req     {scripts:.2f}")
    print(f"redis reads/req       {reads / requests:.2f} (server socket reads: client writes)")
    print(
        f"latency p50 / p99     {percentile(latencies, 0.5) * 1000:.0f} / "
        f"{percentile(latencies, 0.99) * 1000:.0f} ms"
    )
    for name, value in extra.items():
        print(f"{name:22}{value}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
    parser.add_argument("--stages", default="", help="worker --stages (default: all)")
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=None,
        help="default: 5 on Tansu (it never answers a waiting fetch early), 500 on Apache Kafka",
    )
    args = parser.parse_args()
    fetch_ms = args.fetch_max_wait_ms
    if fetch_ms is None:
        fetch_ms = 5 if args.broker == "tansu" else 500
    asyncio.run(
        run(args.requests, args.in_flight, args.latency, fetch_ms, args.broker, args.stages)
    )


if __name__ == "__main__":
    main()

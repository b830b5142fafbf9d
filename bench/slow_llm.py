"""Throughput with a slow model: many sessions in flight in one worker process.

5,000 requests on 5,000 sessions, local model latency 1.0 s, 500 in flight, one worker process
running all stages, embedded broker + Redis on this machine. Prints throughput, the ideal
(in-flight / latency), their ratio, p50/p99 end-to-end latency and the worker's peak RSS.
Target: ratio >= 0.90, RSS <= 250 MB.

    .venv/bin/python bench/slow_llm.py [--requests 5000] [--in-flight 500] [--latency 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from _harness import bench_settings, peak_rss_mb, percentile, start_worker, worker_cpu_s

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack


async def run(
    requests: int, in_flight: int, latency: float, fetch_ms: int, broker: BrokerKind
) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    stack = DevStack(base, broker=broker)
    async with stack as live:
        settings = bench_settings(live, fetch_max_wait_ms=fetch_ms)
        worker = start_worker(
            settings,
            {
                "AGENTSTREAM_LLM__LOCAL_LATENCY_S": str(latency),
                "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT": str(in_flight),
            },
        )
        try:
            async with AgentClient(settings) as client:
                # warm-up: the worker has joined the group and answers
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
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
                start = time.perf_counter()
                for request in batch:
                    sent[request["request_id"]] = time.perf_counter()
                    await client.submit(request)
                await asyncio.wait_for(done.wait(), timeout=600)
                elapsed = time.perf_counter() - start
                await collector
            rss = peak_rss_mb(worker.pid)
            cpu = worker_cpu_s(worker.pid)
            others = {
                f"broker ({broker})": worker_cpu_s(stack.kafka.pid)
                if stack.kafka and stack.kafka.pid
                else 0.0,
                "redis-server": worker_cpu_s(stack.redis.pid) if stack.redis else 0.0,
                "bench client": time.process_time(),
            }
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    throughput = requests / elapsed
    ideal = in_flight / latency if latency else float("inf")
    print(f"requests              {requests} on {requests} sessions")
    print(f"model latency         {latency:.2f} s, in flight {in_flight}")
    print(f"elapsed               {elapsed:.2f} s")
    print(f"throughput            {throughput:.1f} req/s")
    print(f"ideal (in-flight/lat) {ideal:.1f} req/s")
    print(f"ratio                 {throughput / ideal:.3f}   (target >= 0.90)")
    print(f"latency p50           {percentile(latencies, 0.50) * 1000:.0f} ms")
    print(f"latency p99           {percentile(latencies, 0.99) * 1000:.0f} ms")
    print(f"worker peak RSS       {rss:.0f} MB   (target <= 250 MB)")
    print(f"fetch_max_wait_ms     {fetch_ms}")
    print(f"worker CPU            {cpu:.1f} s ({cpu / requests * 1000:.2f} ms per request)")
    for name, seconds in others.items():
        print(f"{name + ' CPU':22}{seconds:.1f} s")
    print(f"machine               {os.cpu_count()} cores, run {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
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
    asyncio.run(run(args.requests, args.in_flight, args.latency, fetch_ms, args.broker))


if __name__ == "__main__":
    main()

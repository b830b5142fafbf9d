"""Per-request overhead of the pipeline: sequential requests, instant model, no tools.

Prints p50/p99 end-to-end latency (client submit -> response received) beside the raw aiokafka
produce -> consume hop latency measured in the same run on the same broker, and the pipeline's
p50 as a number of raw hops. A request makes two hops (requests -> worker -> responses ->
client) when the worker hands its first turn over to its own generation stage (the default,
``kafka.local_handoff``), three without (requests -> generation -> responses -> client); that
is the floor. Target (issue 18): p50 at most 4 raw hops.

    .venv/bin/python bench/overhead.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _harness import bench_settings, percentile, start_worker
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack
from agentstream.streams.admin import ensure_topics
from agentstream.streams.kafka_config import client_kwargs


async def raw_hops(settings: Settings, n: int) -> list[float]:
    topic = "bench.rawhop"
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms
    )
    await producer.start()
    await consumer.start()
    if not consumer.partitions_for_topic(topic):  # Apache Kafka: metadata from before the topic
        await consumer._client.force_metadata_update()
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    hops: list[float] = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 500, key=b"k")
            while not await consumer.getmany(timeout_ms=1000):
                pass
            hops.append(time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()
    return hops


async def run(requests: int, fetch_ms: int, stage_args: list[str], broker: BrokerKind) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    async with DevStack(base, broker=broker) as live:
        settings = bench_settings(live, fetch_max_wait_ms=fetch_ms)
        worker = start_worker(settings, {}, *stage_args)
        try:
            async with AgentClient(settings) as client:
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
                for i in range(20):  # warm the code paths
                    await client.ask(f"hi {i}", session_id=f"w{i}", user_id="u", tenant_id="t")
                e2e: list[float] = []
                for i in range(requests):
                    start = time.perf_counter()
                    await client.ask(f"hello {i}", session_id=f"s{i}", user_id="u", tenant_id="t")
                    e2e.append(time.perf_counter() - start)
            hops = await raw_hops(settings, requests)
        finally:
            worker.terminate()
            worker.wait(timeout=60)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:6.2f} ms"

    hops_p50 = percentile(e2e, 0.5) / percentile(hops, 0.5)
    print(f"requests (sequential)     {requests}, instant model, no tools")
    print(f"pipeline end-to-end p50   {ms(e2e, 0.5)}")
    print(f"pipeline end-to-end p99   {ms(e2e, 0.99)}")
    print(f"raw aiokafka hop p50      {ms(hops, 0.5)}")
    print(f"raw aiokafka hop p99      {ms(hops, 0.99)}")
    print(
        f"pipeline p50 in raw hops  {hops_p50:.2f}   "
        "(target <= 4; a request needs 2, 3 without the local hand-over)"
    )
    print(f"fetch_max_wait_ms         {settings.kafka.fetch_max_wait_ms}")
    print(f"broker                    {broker}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=None,
        help="default: 1 on Tansu (it never answers a waiting fetch early), 500 on Apache Kafka",
    )
    parser.add_argument("--stages", default="", help="worker --stages (default: all)")
    args = parser.parse_args()
    stage_args = ["--stages", args.stages] if args.stages else []
    fetch_ms = args.fetch_max_wait_ms
    if fetch_ms is None:
        fetch_ms = 1 if args.broker == "tansu" else 500
    asyncio.run(run(args.requests, fetch_ms, stage_args, args.broker))


if __name__ == "__main__":
    main()

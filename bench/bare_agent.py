"""The yardstick: a bare Faust agent that sleeps and forwards, with no state, on the same broker.

Run as a process by the benches (``python bench/bare_agent.py --help``): it consumes raw bytes
from ``--source``, sleeps ``--latency`` seconds per record (``concurrency`` records at a time, as
the pipeline holds ``max_in_flight``) and produces the record to ``--sink``. Its worker CPU per
record is the baseline the benches divide agentstream's by, measured in the same run, on the same
machine and broker: a multiple that travels between machines where absolute figures do not.

It consumes with the same Kafka consumer settings as the worker it is compared with: the same
fetch wait (``kafka.fetch_max_wait_ms``, through the same ``TunedApp``; plain Faust hard-codes
1,500 ms) and the same session, heartbeat and commit intervals. On Tansu, which holds a fetch for
its whole wait, the fetch wait sets how often a consumer polls: a baseline polling 300 times less
often than the worker would hide the polling both pay in the multiple (issue 18's fifth round).

:func:`measure` drives it from a bench: N records through it, CPU per record in steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.config import KafkaTuning, Settings
from agentstream.streams.admin import ensure_topics
from agentstream.streams.kafka_config import client_kwargs


def _app(args: argparse.Namespace) -> None:
    from agentstream.streams.faust_app import TunedApp

    app = TunedApp(
        f"bare-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        broker=f"kafka://{args.bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        broker_session_timeout=args.session_timeout_s,
        broker_heartbeat_interval=args.heartbeat_interval_s,
        broker_rebalance_timeout=args.rebalance_timeout_s,
        broker_commit_interval=args.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        store="memory://",
        datadir=args.datadir,
        producer_acks=-1,
    )
    app.conf.consumer_max_fetch_size = 4 * 1024 * 1024
    app.conf.broker_max_poll_records = 500
    source = app.topic(args.source, value_type=bytes, key_type=bytes)
    sink = app.topic(args.sink, value_type=bytes, key_type=bytes)
    latency = args.latency

    @app.agent(source, concurrency=args.concurrency)
    async def forward(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await asyncio.sleep(latency)
            await sink.send(key=event.key, value=event.value)

    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", "warn"]
    app.main()


@dataclass(frozen=True, kw_only=True)
class Baseline:
    records: int
    elapsed_s: float
    cpu_s: float
    idle_cores: float

    @property
    def cpu_ms_per_record(self) -> float:
        return self.cpu_s / self.records * 1000

    @property
    def throughput(self) -> float:
        return self.records / self.elapsed_s


def cpu_s(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    settings: Settings,
    *,
    records: int,
    concurrency: int,
    latency: float,
    run_dir: Path,
    idle_s: float = 3.0,
) -> Baseline:
    """Start the bare agent, warm it up, then push ``records`` through it; its steady CPU."""
    tag = uuid.uuid4().hex[:6]
    source, sink = f"bare.{tag}.in", f"bare.{tag}.out"
    await ensure_topics(settings, [source, sink])
    proc = _spawn(settings, source, sink, latency, concurrency, run_dir / f"bare-{tag}")
    # fed as AgentClient.submit feeds the pipeline: one acknowledged send at a time
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms
    )
    await producer.start()
    await consumer.start()
    try:
        if not consumer.partitions_for_topic(sink):
            await consumer._client.force_metadata_update()
        tps = [TopicPartition(sink, p) for p in sorted(consumer.partitions_for_topic(sink) or [])]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        await producer.send_and_wait(source, b"warm", key=b"warm")
        await _receive(consumer, 1, timeout_s=120)  # joined and forwarding
        idle_from = cpu_s(proc.pid)
        await asyncio.sleep(idle_s)
        idle_cores = (cpu_s(proc.pid) - idle_from) / idle_s
        before = cpu_s(proc.pid)
        start = time.perf_counter()
        for i in range(records):
            await producer.send_and_wait(source, b"x" * 300, key=f"s{i}".encode())
        await _receive(consumer, records, timeout_s=600)
        elapsed = time.perf_counter() - start
        used = cpu_s(proc.pid) - before
    finally:
        await producer.stop()
        await consumer.stop()
        proc.terminate()
        proc.wait(timeout=60)
    return Baseline(records=records, elapsed_s=elapsed, cpu_s=used, idle_cores=idle_cores)


def _spawn(
    settings: Settings, source: str, sink: str, latency: float, concurrency: int, data: Path
) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    kafka = settings.kafka
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__)),
            "--bootstrap",
            settings.kafka_bootstrap_servers or "",
            "--source",
            source,
            "--sink",
            sink,
            "--latency",
            str(latency),
            "--concurrency",
            str(concurrency),
            "--datadir",
            str(data),
            "--fetch-max-wait-ms",
            str(kafka.fetch_max_wait_ms),
            "--session-timeout-s",
            str(kafka.session_timeout_s),
            "--heartbeat-interval-s",
            str(kafka.heartbeat_interval_s),
            "--rebalance-timeout-s",
            str(kafka.rebalance_timeout_s),
            "--commit-interval-s",
            str(kafka.commit_interval_s),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(data.parent / "bare-agent.log", "ab"),
    )


async def _receive(consumer: AIOKafkaConsumer, n: int, *, timeout_s: float) -> None:
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bare agent forwarded {got} of {n} records in {timeout_s:g}s")
        batches = await consumer.getmany(timeout_ms=200)
        got += sum(len(b) for b in batches.values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--datadir", default="/tmp/bare-agent-data")
    kafka = KafkaTuning()
    parser.add_argument("--fetch-max-wait-ms", type=int, default=kafka.fetch_max_wait_ms)
    parser.add_argument("--session-timeout-s", type=float, default=kafka.session_timeout_s)
    parser.add_argument("--heartbeat-interval-s", type=float, default=kafka.heartbeat_interval_s)
    parser.add_argument("--rebalance-timeout-s", type=float, default=kafka.rebalance_timeout_s)
    parser.add_argument("--commit-interval-s", type=float, default=kafka.commit_interval_s)
    _app(parser.parse_args())

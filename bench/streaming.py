"""Token streaming: time to first delta, and what streaming costs against not streaming.

One worker process (all stages), the local rule model with a latency that it spreads over the
words of its answer when streaming, embedded broker + Redis. In the same run, the same number of
requests go through twice, ``--in-flight`` at a time: first without streaming, then streaming
(``AgentClient.stream``). Prints for each phase: worker CPU per request, latency percentiles;
for the streaming phase also the time to first delta and the stream records per request; and
the streaming phase's CPU per request as a multiple of the plain phase's.

    .venv/bin/python bench/streaming.py [--requests 300] [--in-flight 50] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field

from _harness import bench_settings, percentile, start_worker, worker_cpu_s

from agentstream.client import AgentClient, AgentResponse
from agentstream.config import Settings
from agentstream.embedded import DevStack

MESSAGE = "please tell me how the weather has been in the mountains this whole week"


@dataclass
class Phase:
    name: str
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_delta: list[float] = field(default_factory=list)
    records: int = 0


async def plain(client: AgentClient, index: int, phase: Phase) -> None:
    start = time.perf_counter()
    answer = await client.ask(
        MESSAGE, session_id=f"plain-{index}", user_id="u", tenant_id="t", timeout=120
    )
    assert answer.ok, answer.error_code
    phase.latencies.append(time.perf_counter() - start)


async def streamed(client: AgentClient, index: int, phase: Phase) -> None:
    start = time.perf_counter()
    first: float | None = None
    async for item in client.stream(
        MESSAGE, session_id=f"stream-{index}", user_id="u", tenant_id="t", timeout=120
    ):
        if isinstance(item, AgentResponse):
            assert item.ok, item.error_code
            continue
        phase.records += 1
        if first is None:
            first = time.perf_counter() - start
            phase.first_delta.append(first)
    phase.latencies.append(time.perf_counter() - start)


async def measure(
    client: AgentClient, pid: int, phase: Phase, requests: int, in_flight: int
) -> Phase:
    gate = asyncio.Semaphore(in_flight)
    one = streamed if phase.name == "streaming" else plain

    async def run(index: int) -> None:
        async with gate:
            await one(client, index, phase)

    cpu_before = worker_cpu_s(pid)
    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(requests)))
    phase.elapsed_s = time.perf_counter() - start
    phase.cpu_s = worker_cpu_s(pid) - cpu_before
    return phase


async def main(requests: int, in_flight: int, latency: float) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    async with DevStack(base) as live:
        settings = bench_settings(live)
        worker = start_worker(
            settings,
            {
                "AGENTSTREAM_LLM__LOCAL_LATENCY_S": str(latency),
                "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT": str(max(in_flight * 2, 10)),
            },
        )
        print(f"worker pid {worker.pid}", file=sys.stderr, flush=True)
        try:
            async with AgentClient(settings) as client:
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
                async for _ in client.stream(
                    "hello", session_id="warm-s", user_id="u", tenant_id="t"
                ):
                    pass
                phases = [
                    await measure(client, worker.pid, Phase(name), requests, in_flight)
                    for name in ("plain", "streaming")
                ]
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    report(phases, requests=requests, in_flight=in_flight, latency=latency, settings=settings)


def report(
    phases: list[Phase], *, requests: int, in_flight: int, latency: float, settings: Settings
) -> None:
    plain_phase, stream_phase = phases
    s = settings.streaming
    print(
        f"{requests} requests per phase, {in_flight} in flight, local model latency {latency:g} s, "
        f"coalescing {s.flush_interval_ms:g} ms / {s.flush_tokens} deltas, {os.cpu_count()} cores"
    )
    for phase in phases:
        lat = sorted(phase.latencies)
        p50, p95 = percentile(lat, 0.5) * 1000, percentile(lat, 0.95) * 1000
        print(
            f"  {phase.name:9}  worker CPU {phase.cpu_s / requests * 1000:6.2f} ms/request   "
            f"latency p50 {p50:7.1f} ms  p95 {p95:7.1f} ms   "
            f"{requests / phase.elapsed_s:6.1f} req/s"
        )
    first = sorted(stream_phase.first_delta)
    print(
        f"  time to first delta  p50 {percentile(first, 0.5) * 1000:.1f} ms  "
        f"p95 {percentile(first, 0.95) * 1000:.1f} ms  "
        f"(final response p50 {percentile(sorted(stream_phase.latencies), 0.5) * 1000:.1f} ms)"
    )
    print(f"  stream records per request  {stream_phase.records / requests:.1f}")
    ratio = (stream_phase.cpu_s / requests) / max(1e-9, plain_phase.cpu_s / requests)
    print(f"  streaming CPU per request = {ratio:.2f} x not streaming (same run)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.in_flight, args.latency))

"""Client CPU per script call through the auto-pipeline (state/autopipe.py), on an embedded Redis.

Two loads on one worker-like event loop:

- steady: ``--sessions`` tasks, each making a script call, then burning ``--work-us`` of Python
  (the stage's own work around a call), then sleeping so that the whole runs at about ``--rate``
  calls per second; like a worker with hundreds of requests in flight, calls arrive one by one
  rather than in bursts. Prints client CPU per call (the Python work subtracted), calls per
  write (``batches``: one write and one read each) and the call latency percentiles.
- sequential: one task, calls back to back: the latency of a lone call (it must go out at once).

    .venv/bin/python bench/autopipe_cpu.py [--rate 2000] [--sessions 500] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path

from agentstream.embedded.redis_server import EmbeddedRedis
from agentstream.state.autopipe import AutoPipeline
from agentstream.state.redis import redis_from_url

# about the size of the claim script's call: three keys of one hash tag, eight arguments
SCRIPT = "redis.call('HSET', KEYS[1], 'n', ARGV[1]) return {ARGV[1], 1, 'ok'}"


def _burn(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def steady(pipe: AutoPipeline, sessions: int, rate: float, seconds: float, work_us: float):
    script = pipe.register_script(SCRIPT)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    mean_gap = sessions / rate

    async def session(i: int) -> None:
        keys = [f"bench:{{s{i}}}:ctx", f"bench:{{s{i}}}:step", f"bench:{{s{i}}}:dedupe"]
        await asyncio.sleep(random.uniform(0, mean_gap))
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await script(keys=keys, args=[f"r{i}", "owner", 30, 0, "x" * 40, 1, 2, 3])
            latencies.append(time.perf_counter() - t0)
            _burn(work_us)
            await asyncio.sleep(random.expovariate(1 / mean_gap))

    cpu0, batches0, calls0 = time.process_time(), pipe.batches, pipe.calls
    t0 = time.perf_counter()
    await asyncio.gather(*(session(i) for i in range(sessions)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    calls, batches = pipe.calls - calls0, pipe.batches - batches0
    client_us = (cpu - calls * work_us / 1e6) / calls * 1e6
    latencies.sort()
    print(
        f"steady      {calls / wall:7.0f} calls/s  client CPU {client_us:6.1f} us/call  "
        f"calls/write {calls / batches:5.2f}  "
        f"latency p50 {latencies[len(latencies) // 2] * 1e6:5.0f}"
        f" p99 {latencies[int(len(latencies) * 0.99)] * 1e6:6.0f} us"
    )


async def sequential(pipe: AutoPipeline, n: int) -> None:
    script = pipe.register_script(SCRIPT)
    keys = ["bench:{seq}:ctx", "bench:{seq}:step", "bench:{seq}:dedupe"]
    latencies = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await script(keys=keys, args=["r", "owner", 30, 0, "x" * 40, 1, 2, 3])
        latencies.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    latencies.sort()
    print(
        f"sequential  client CPU {cpu / n * 1e6:6.1f} us/call  "
        f"latency p50 {latencies[n // 2] * 1e6:5.0f} us"
    )


async def bursts(pipe: AutoPipeline, size: int, n: int) -> None:
    script = pipe.register_script(SCRIPT)
    keys = ["bench:{burst}:ctx", "bench:{burst}:step", "bench:{burst}:dedupe"]
    cpu0 = time.process_time()
    for _ in range(n):
        await asyncio.gather(
            *(script(keys=keys, args=["r", "owner", 30, 0, "x" * 40, 1, 2, 3]) for _ in range(size))
        )
    cpu = time.process_time() - cpu0
    print(f"bursts of {size:2}  client CPU {cpu / (n * size) * 1e6:6.1f} us/call")


async def function_calls(pipe: AutoPipeline, size: int, n: int) -> None:
    """Python function calls per script call (counted, so not moved by a busy machine)."""
    script = pipe.register_script(SCRIPT)
    keys = ["bench:{count}:ctx", "bench:{count}:step", "bench:{count}:dedupe"]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        await asyncio.gather(
            *(script(keys=keys, args=["r", "owner", 30, 0, "x" * 40, 1, 2, 3]) for _ in range(size))
        )
    profile.disable()
    total = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    print(f"function calls per script call, batches of {size:2}: {total / (n * size):6.1f}")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(run_dir=Path(tmp)) as server:
        client = redis_from_url(server.url)
        pipe = AutoPipeline(client)
        try:
            await sequential(pipe, 200)  # warm-up: connections, script load
            for size in (1, 8):
                await function_calls(pipe, size, 200)
            for _ in range(args.rounds):
                await steady(pipe, args.sessions, args.rate, args.seconds, args.work_us)
                await sequential(pipe, 2000)
                await bursts(pipe, 8, 500)
        finally:
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--work-us", type=float, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

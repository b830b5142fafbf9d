"""Redis round trips per request, by call site: a worker in this process, counted client-side.

Runs a worker in-process on the embedded stack, sends N requests without tools (one per
session, all at once), and counts every round trip the worker's redis-py client makes (a
command, a pipeline or an auto-pipelined batch is one) and which agentstream function made it.
Prints round trips per request by call site and in total, and script calls per request.
Target (issue 18): at most 3 round trips per request without tools.

    .venv/bin/python bench/redis_trips.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import traceback
from collections import Counter
from typing import Any

import redis.asyncio.client as redis_client
from _harness import bench_settings

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import DevStack
from agentstream.state.autopipe import AutoPipeline
from agentstream.streams.app import PipelineWorker

trips: Counter[tuple[str, str]] = Counter()
counting = False


def _site() -> str:
    frames = [
        f
        for f in traceback.extract_stack()
        if "/agentstream/" in f.filename and "site-packages" not in f.filename
    ]
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.split('agentstream/')[-1]}:{last.name}"


def _install() -> None:
    """Wrap redis-py's single-command and pipeline paths, and the auto-pipeline's own batch
    exchange on one server, to count round trips."""
    command = redis_client.Redis.execute_command
    pipeline = redis_client.Pipeline.execute
    exchange = AutoPipeline._exchange

    async def count_exchange(self: Any, pool: Any, batch: Any) -> Any:
        if counting:
            trips[(f"autopipe[{len(batch)}]:EVALSHA", _site())] += 1
        return await exchange(self, pool, batch)

    async def count_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        if counting:
            trips[(str(args[0]), _site())] += 1
        return await command(self, *args, **kwargs)

    async def count_pipeline(self: Any, raise_on_error: bool = True) -> Any:
        if counting:
            names = sorted({str(c[0][0]) for c in self.command_stack})
            trips[(f"pipeline[{len(self.command_stack)}]:{','.join(names)}", _site())] += 1
        return await pipeline(self, raise_on_error)

    redis_client.Redis.execute_command = count_command  # type: ignore[method-assign]
    redis_client.Pipeline.execute = count_pipeline  # type: ignore[method-assign]
    AutoPipeline._exchange = count_exchange  # type: ignore[method-assign]


async def run(requests: int) -> None:
    global counting
    _install()
    async with DevStack(Settings(kafka_bootstrap_servers=None, redis_url=None)) as live:
        settings = bench_settings(live)
        async with PipelineWorker(settings) as _, AgentClient(settings) as client:
            await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=60)
            counting = True
            batch = [
                new_request(f"hello {i}", session_id=f"s{i}", user_id="u", tenant_id="t")
                for i in range(requests)
            ]
            futures = [client.expect(r["request_id"]) for r in batch]
            for request in batch:
                await client.submit(request)
            await asyncio.wait_for(asyncio.gather(*futures), timeout=300)
            await asyncio.sleep(0.5)  # usage is booked behind (admission.usage_flush_s)
            counting = False
    total = sum(trips.values())
    print(f"requests             {requests} (no tools, one per session, sent at once)")
    for (what, site), n in sorted(trips.items(), key=lambda kv: -kv[1]):
        print(f"{n / requests:6.2f}  {what:40} {site}")
    print(f"round trips/request  {total / requests:.2f}   (target <= 3)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()

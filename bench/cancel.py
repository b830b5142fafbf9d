"""Time from a cancel to the request's final (CANCELLED) response, on a slow local model.

One worker process running all stages, the local model answering after ``--latency`` s (60 by
default: without the cancel, every request would take that long), embedded broker + Redis.
For each of ``--rounds`` requests (each on its own session): submit it, wait until its model
call is running (its LLM step is ``running`` in the step journal), send a cancel with
``AgentClient.cancel`` and time from sending the cancel to receiving the CANCELLED response.
Then, on the same stack, a worker whose model answers at once measures the round trip of a
request: the baseline a cancel is compared with (a cancel is a few hops: control topic -> every
worker -> Redis decision -> abort -> response topic, so it should cost about one round trip).

Target (issue 12): cancel -> final response under 1 s.

    .venv/bin/python bench/cancel.py [--rounds 20] [--latency 60]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from _harness import bench_settings, percentile, start_worker
from redis.asyncio import Redis

from agentstream.cancel_client import CancelOutcome
from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import BROKER_KINDS, BrokerKind, DevStack
from agentstream.state.journal import llm_step_id
from agentstream.state.keys import Keys


async def _running(redis: Redis, keys: Keys, request: dict[str, str], deadline_s: float) -> None:
    """Wait until the request's first model call runs (its journal step says so)."""
    step = keys.step(
        request["tenant_id"], request["session_id"], llm_step_id(request["request_id"], 0)
    )
    end = time.monotonic() + deadline_s
    while await redis.hget(step, "status") not in (b"running", "running"):
        if time.monotonic() > end:
            raise RuntimeError("the model call did not start in time (see bench-worker.log)")
        await asyncio.sleep(0.005)


async def run(rounds: int, latency: float, broker: BrokerKind) -> None:
    base = Settings(kafka_bootstrap_servers=None, redis_url=None)
    async with DevStack(base, broker=broker) as live:
        settings = bench_settings(live)
        extra = {"AGENTSTREAM_LLM__LOCAL_LATENCY_S": str(latency)}
        worker = start_worker(settings, extra)
        redis = Redis.from_url(settings.redis_url or "")
        keys = Keys(settings.state.key_prefix)
        try:
            async with AgentClient(settings) as client:
                # warm-up (group join) with the slow model: one cancelled request
                cancel_s = []
                for i in range(rounds + 1):
                    session = f"bench-{uuid.uuid4().hex[:8]}"
                    request = new_request("hello", session_id=session, user_id="u", tenant_id="t")
                    answer = client.expect(request["request_id"])
                    await client.submit(request)
                    await _running(redis, keys, request, 90 if i == 0 else 30)
                    result = await client.cancel(request["request_id"], tenant_id="t", wait=30)
                    if result.outcome is not CancelOutcome.CANCELLED:
                        raise RuntimeError(f"cancel {i}: {result.outcome}")
                    await answer
                    if i:
                        cancel_s.append(result.seconds)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
        # baseline: request round trips on the same stack, model without latency
        worker = start_worker(settings, {"AGENTSTREAM_LLM__LOCAL_LATENCY_S": "0"})
        try:
            async with AgentClient(settings) as client:
                await client.ask("hello", session_id="warm", user_id="u", tenant_id="t", timeout=90)
                trip_s = []
                for _ in range(rounds):
                    started = time.monotonic()
                    session = f"base-{uuid.uuid4().hex[:8]}"
                    await client.ask("hello", session_id=session, user_id="u", tenant_id="t")
                    trip_s.append(time.monotonic() - started)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            await redis.aclose()
    p50, p90, worst = (percentile(cancel_s, 0.5), percentile(cancel_s, 0.9), max(cancel_s))
    base50 = percentile(trip_s, 0.5)
    print(f"broker {broker}, model latency {latency:g} s, {rounds} cancels")
    print(
        f"cancel -> CANCELLED response: p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, ", end=""
    )
    print(f"max {worst * 1000:.0f} ms (target < 1000 ms: {'met' if worst < 1 else 'NOT met'})")
    print(f"request round trip, no model latency (baseline): p50 {base50 * 1000:.0f} ms")
    print(f"cancel p50 / round-trip p50: {p50 / base50:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--latency", type=float, default=60.0)
    parser.add_argument("--broker", choices=BROKER_KINDS, default="tansu")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.latency, args.broker))


if __name__ == "__main__":
    main()

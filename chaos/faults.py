"""Faults injected into a running stack. Each returns the wall-clock window it lasted.

A fault's window ends when the condition is lifted: at once for a kill (the survivors must take
over) or ``CLIENT KILL``, at SIGCONT for a pause, when the fresh Redis answers for a restart,
when the killed broker is back for the Apache Kafka node kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from agentstream.embedded import ApacheKafka
from agentstream.state.redis import redis_from_url
from agentstream.streams.kafka_config import client_kwargs
from chaos.stack import Stack

Window = tuple[float, float]
Inject = Callable[[Stack], Awaitable[Window]]

REPLACEMENT_DELAY_S = 10.0


@dataclass(frozen=True, kw_only=True)
class Fault:
    name: str
    what: str
    inject: Inject


async def no_fault(stack: Stack) -> Window:
    now = time.time()
    return now, now


async def kill_worker(stack: Stack) -> Window:
    """``kill -9`` one worker; a replacement starts :data:`REPLACEMENT_DELAY_S` later."""
    victim = stack.live_workers()[0]
    started = time.time()
    victim.process.kill()
    asyncio.get_running_loop().call_later(REPLACEMENT_DELAY_S, stack.spawn_worker, len(stack.procs))
    return started, started


def pause(pid_of: Callable[[Stack], int | None], hold_s: float) -> Inject:
    """SIGSTOP the process, hold, SIGCONT."""

    async def inject(stack: Stack) -> Window:
        pid = pid_of(stack)
        if pid is None:
            raise RuntimeError("no process to pause")
        started = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        return started, time.time()

    return inject


def broker_pid(stack: Stack) -> int | None:
    return None if stack.kafka is None else stack.kafka.pid


def redis_pid(stack: Stack) -> int | None:
    return None if stack.redis is None else stack.redis.pid


def restart_redis_empty(down_s: float) -> Inject:
    async def inject(stack: Stack) -> Window:
        started = time.time()
        await stack.restart_redis_empty(down_s)
        return started, time.time()

    return inject


def kill_redis_clients(times: int, every_s: float) -> Inject:
    """``CLIENT KILL TYPE normal`` ``times`` times: every client connection closed, data kept."""

    async def inject(stack: Stack) -> Window:
        client = redis_from_url(stack.settings.redis_url or "")
        started = time.time()
        try:
            for n in range(times):
                if n:
                    await asyncio.sleep(every_s)
                await client.execute_command("CLIENT", "KILL", "TYPE", "normal")
        finally:
            await client.aclose()
        return started, time.time()

    return inject


def kill_kafka_coordinator(down_s: float) -> Inject:
    """``kill -9`` the Apache Kafka node coordinating the workers' group (the others must take
    over its partitions and the group); it starts again ``down_s`` later, in the background."""

    async def inject(stack: Stack) -> Window:
        kafka = stack.kafka
        if not isinstance(kafka, ApacheKafka):
            raise RuntimeError("the broker-kill fault needs the Apache Kafka cluster")
        admin = AIOKafkaAdminClient(**client_kwargs(stack.settings))
        await admin.start()
        try:
            node = await admin.find_coordinator(stack.settings.consumer_group)
        finally:
            await admin.close()
        started = time.time()
        kafka.kill_node(node)

        async def restart() -> None:
            await asyncio.sleep(down_s)
            await kafka.restart_node_async(node)

        stack.background.append(asyncio.create_task(restart()))
        return started, started

    return inject

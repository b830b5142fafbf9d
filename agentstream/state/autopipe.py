"""Auto-pipelining of Lua script calls: concurrent calls share one write and one read.

A worker runs hundreds of sessions at once, and each stage event makes one or two script calls
(claim, step begin, compare-and-set). Sent one by one, every call is a socket write and a read
of its own, and writing to Redis was the largest single CPU cost of a worker (issue 18's
profile: about a fifth of all samples). Here a call is queued and goes out with the others
queued beside it as one non-transactional pipeline (at most ``max_batch`` calls each): one
write, one read, one pooled connection. Each caller gets its own reply or error, as if it had
called alone.

When calls go out (an adaptive linger, like Nagle's algorithm): at the end of the event-loop
turn they were queued in, if fewer than ``max_in_flight`` batches are on their way; otherwise as
soon as one comes back (its callers' next calls join them) or, at the latest, ``linger_s``
after they were queued. A lone call with nothing in flight goes out at once; under a steady
load, calls that arrive while a batch is out wait for its round trip and share the next write.

On one server a batch is written and read on a pooled connection with redis-py's own packer
and reply parser (no pipeline objects: about half the client CPU of a call), under the pool's
retry policy: a connection error disconnects, pauses and sends the batch again, as redis-py's
pipeline does. On a Redis Cluster a batch is a cluster pipeline (split per node; a lone call a
plain ``EVALSHA``).

Nothing is atomic across calls in a batch (no ``MULTI``); each script is atomic on its own, as
before. A connection error fails every call of its batch (the pool's retry and the stages'
outage handling take it from there); a script the server does not know yet (``NOSCRIPT``: a new
server, a promoted replica) is sent again on its own, which loads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.commands.core import AsyncScript
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.utils import HIREDIS_AVAILABLE

from agentstream.state.redis import RedisClient

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]
_HIREDIS = HiredisRespSerializer()


class AutoPipeline:
    def __init__(
        self,
        redis: RedisClient,
        *,
        max_batch: int = 128,
        max_in_flight: int = 1,
        linger_s: float = 0.002,
    ) -> None:
        self._redis = redis
        # one server: batches on the pool's connections with their own primitives
        self._pool = redis.connection_pool if isinstance(redis, Redis) else None
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._queued: list[_Call] = []
        self._scheduled = False
        self._linger: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.calls = 0

    def register_script(self, text: str) -> BatchedScript:
        return BatchedScript(self, self._redis.register_script(text))

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._turn_ended)
        return await future

    def _turn_ended(self) -> None:
        self._scheduled = False
        if not self._queued:
            return
        if self._in_flight < self._max_in_flight:
            self._flush()
        elif self._linger is None:  # wait for a batch to come back, at most linger_s
            self._linger = asyncio.get_running_loop().call_later(self._linger_s, self._flush)

    def _flush(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        queued, self._queued = self._queued, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queued), self._max_batch):
            self._in_flight += 1
            task = loop.create_task(self._send(queued[start : start + self._max_batch]))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._in_flight -= 1
        if self._queued and not self._scheduled:  # after the callers just answered have run
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_ended)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            if self._pool is not None:
                replies = await self._exchange(self._pool, batch)
            else:
                replies = await self._via_client(batch)
            if len(replies) != len(batch):
                raise RedisConnectionError(
                    f"pipeline answered {len(replies)} of {len(batch)} calls"
                )
        except BaseException as exc:  # the whole batch failed (connection): every caller sees it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, reply in zip(batch, replies, strict=True):
            self._answer(call, reply)

    async def _exchange(self, pool: ConnectionPool, batch: list[_Call]) -> list[Any]:
        """One server: the batch on a pooled connection, retried as redis-py retries a
        pipeline (a connection error disconnects, pauses, and the whole batch goes again)."""
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: _write_and_read(conn, batch), lambda _error: conn.disconnect()
            )
        finally:
            await pool.release(conn)

    async def _via_client(self, batch: list[_Call]) -> list[Any]:
        """Redis Cluster: a cluster pipeline (split per node), a lone call as a plain command;
        an error reply is the caller's reply, as a pipeline returns it."""
        if len(batch) == 1:
            script, keys, args, _ = batch[0]
            try:
                command = ("EVALSHA", script.sha, len(keys), *keys, *args)
                return [await self._redis.execute_command(*command)]
            except Exception as exc:  # noqa: BLE001 - the caller's reply (NOSCRIPT: sent again)
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    def _answer(self, call: _Call, reply: Any) -> None:
        script, keys, args, future = call
        if future.done():  # the caller was cancelled meanwhile
            return
        if isinstance(reply, NoScriptError):
            self._alone(script, keys, args, future)
        elif isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def _alone(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        future: asyncio.Future[Any],
    ) -> None:
        """Send one call on its own: the script object loads the script where it is missing."""

        async def send() -> None:
            try:
                reply = await script(keys=keys, args=args)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(reply)

        task = asyncio.get_running_loop().create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


async def _write_and_read(conn: AbstractConnection, batch: list[_Call]) -> list[Any]:
    """Every call of the batch in one write, then every reply (redis-py's parser: hiredis where
    installed); an error reply is its caller's reply."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in batch]
    await conn.send_packed_command(_pack(conn, commands))
    replies: list[Any] = []
    for _ in batch:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _pack(conn: AbstractConnection, commands: list[tuple[Any, ...]]) -> bytes | list[bytes]:
    """redis-py's hiredis packer (its sync connections use it; the asyncio connection packs in
    Python, about 4x the CPU): the same bytes."""
    if not HIREDIS_AVAILABLE:
        return conn.pack_commands(commands)
    return b"".join(chunk for command in commands for chunk in _HIREDIS.pack(*command))


class BatchedScript:
    """A registered script whose calls go through an :class:`AutoPipeline`."""

    def __init__(self, pipeline: AutoPipeline, script: AsyncScript) -> None:
        self._pipeline = pipeline
        self.script = script

    @property
    def sha(self) -> str:
        return str(self.script.sha)

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        return await self._pipeline.call(self.script, keys, args)

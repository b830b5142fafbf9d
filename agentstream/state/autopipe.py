"""Auto-pipelining of Lua script calls: the calls issued in one event-loop turn share one write.

A worker runs hundreds of sessions at once, and each stage event makes one or two script calls
(claim, step begin, compare-and-set). Sent one by one, every call is a socket write and a read
of its own, and writing to Redis was the largest single CPU cost of a worker (issue 18's
profile: about a fifth of all samples). Here a call is queued, and at the end of the current
event-loop turn everything queued goes out as one non-transactional pipeline (at most
``max_batch`` calls each): one write, one read, one pooled connection. Each caller gets its own
reply or error, as if it had called alone. A batch of one is a plain ``EVALSHA``.

Nothing is atomic across calls in a batch (no ``MULTI``); each script is atomic on its own, as
before. A connection error fails every call of its batch (the pool's retry and the stages'
outage handling take it from there); a script the server does not know yet (``NOSCRIPT``: a new
server, a promoted replica) is sent again on its own, which loads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from agentstream.state.redis import RedisClient

_Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, redis: RedisClient, *, max_batch: int = 128) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queued: list[_Call] = []
        self._scheduled = False
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
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), self._max_batch):
            task = asyncio.get_running_loop().create_task(
                self._send(queued[start : start + self._max_batch])
            )
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            if len(batch) == 1:  # most batches under a steady load: no pipeline objects for one
                replies = [await self._reply_alone(batch[0])]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for script, keys, args, _ in batch:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
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

    async def _reply_alone(self, call: _Call) -> Any:
        """A batch of one as a plain command (about 20 us of client CPU less than a pipeline of
        one); its error is its reply, as a pipeline returns it."""
        script, keys, args, _ = call
        try:
            return await self._redis.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except Exception as exc:  # noqa: BLE001 - the caller's reply (NOSCRIPT: sent again)
            return exc

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

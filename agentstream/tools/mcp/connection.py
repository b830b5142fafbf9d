"""One long-lived MCP session per server per worker, reconnected with backoff.

A supervisor task owns the session: it connects (``mcp.Client``), lists the tools, hands them to
``on_tools``, then waits. Every ``health_check_interval_s`` it lists the tools again, which both
proves the server is alive and picks up tool changes. When a call finds the connection broken,
or the transport fails on its own, the session is closed, the server is marked unhealthy and the
supervisor reconnects after a jittered exponential backoff (``reconnect_initial_s`` doubling up to
``reconnect_max_s``). Calls made while disconnected fail at once with ``TOOL_UNAVAILABLE``.

Calls run concurrently on the session, at most ``max_concurrency`` at a time per server. Each
call runs in its own task so that a transport failure, which the SDK delivers by cancelling the
waiting call, becomes a tool error for that call instead of cancelling the caller.

The SDK's client-side response cache is disabled: tool listings must be fresh and results are
cached by :mod:`agentstream.tools.cache` under the project's rules. A stdio server's stderr goes
to ``<run_dir>/mcp/<server>.stderr.log``, never into the worker's own log.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO, cast

import httpx2
import mcp_types
from mcp import Client, InputRequiredRoundsExceededError, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, CallToolResult, Implementation, RequestParamsMeta
from pydantic import ValidationError

from agentstream import __version__
from agentstream.observability.logging import get_logger
from agentstream.tools.exceptions import ToolExecutionError, ToolUnavailableError
from agentstream.tools.health import ServerHealth, describe_error
from agentstream.tools.mcp.config import McpServerConfig, expand_env
from agentstream.tools.settings import ToolSettings

log = get_logger(__name__)

ToolsCallback = Callable[["McpConnection", list[mcp_types.Tool]], None]
_MAX_LIST_PAGES = 100
# Errors about one result (output-schema mismatch, malformed result, too many input rounds),
# as opposed to transport failures, which break the session.
# (InputRequiredRoundsExceededError is a RuntimeError; named for the reader.)
_BAD_RESULT = (RuntimeError, ValidationError, InputRequiredRoundsExceededError)
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class _SessionBroken(Exception):
    """A call or a health check found the session unusable."""


class McpConnection:
    def __init__(
        self,
        config: McpServerConfig,
        *,
        settings: ToolSettings,
        on_tools: ToolsCallback,
        log_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.health = ServerHealth(name=config.name, transport=config.transport)
        self._settings = settings
        self._on_tools = on_tools
        self._log_dir = log_dir
        self._limit = asyncio.Semaphore(
            config.max_concurrency or settings.max_concurrency_per_server
        )
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._broken_reason: str | None = None
        self._attempted = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    def start(self) -> None:
        """Start the supervisor (idempotent); it connects in the background."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._attempted.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"mcp-{self.name}"
            )

    async def wait_attempted(self, timeout_s: float) -> bool:
        """Wait until the first connection attempt succeeded or failed; ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._attempted.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=self._settings.stop_timeout_s)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        self._task = None
        self._client = None
        self.health.connected = False

    # --- calls ----------------------------------------------------------------------------------

    async def call(
        self, tool: str, arguments: dict[str, Any], *, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        """Call ``tool`` on this server. Raises :class:`ToolUnavailableError` when the server is
        not connected or the connection breaks during the call, :class:`ToolExecutionError` for a
        protocol-level error answer. An ``is_error`` result is returned, not raised."""
        async with self._limit:
            client = self._client
            if client is None:
                raise ToolUnavailableError(f"MCP server {self.name!r} is not connected")
            self.health.calls += 1
            started = time.perf_counter()
            request = asyncio.ensure_future(
                client.call_tool(tool, arguments, meta=cast("RequestParamsMeta | None", meta))
            )
            request.add_done_callback(_retrieve)
            try:
                await asyncio.wait({request})
            except asyncio.CancelledError:  # our caller's timeout or cancellation
                request.cancel()
                raise
            if request.cancelled():
                raise self._lost("the connection was lost during the call", client)
            error = request.exception()
            if isinstance(error, MCPError) and error.code != CONNECTION_CLOSED:
                self.health.latency.add(_ms_since(started))
                raise ToolExecutionError(f"MCP error {error.code}: {error.message}")
            if isinstance(error, _BAD_RESULT) and self._client is client:
                # The session is fine; the answer is not usable. The SDK's message may quote the
                # result, so only the kind of problem is passed on.
                self.health.latency.add(_ms_since(started))
                raise ToolExecutionError(
                    f"the server's answer could not be used ({type(error).__name__}: it does not "
                    "match the protocol or the tool's declared output schema)"
                )
            if error is not None:
                raise self._lost(describe_error(error), client)
            self.health.latency.add(_ms_since(started))
            return request.result()

    def _lost(self, reason: str, client: Client) -> ToolUnavailableError:
        self.health.call_failures += 1
        if self._client is client:  # not a leftover call of a session already replaced
            self.mark_broken(reason)
        return ToolUnavailableError(f"MCP server {self.name!r} failed during the call: {reason}")

    def mark_broken(self, reason: str) -> None:
        """Close the session and reconnect (called when a call finds the connection dead)."""
        if self._client is None or self._stopping:
            return
        self._broken_reason = reason
        self.health.connected = False
        self._client = None
        self._wake.set()

    # --- the supervisor -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        settings = self._settings
        delay = settings.reconnect_initial_s
        while not self._stopping:
            connected_before = self.health.connects
            try:
                await self._session()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise
                self._failed("the session was cancelled by its transport")
            except Exception as exc:  # noqa: BLE001 - any session failure is recorded and retried
                self._failed(self._broken_reason or describe_error(exc))
            else:
                if self._broken_reason is not None:
                    self._failed(self._broken_reason)
            finally:
                self._client = None
                self.health.connected = False
                self._broken_reason = None
            self._attempted.set()
            if self._stopping:
                return
            if self.health.connects > connected_before:
                delay = settings.reconnect_initial_s
            pause = delay * random.uniform(0.8, 1.2)
            log.info("mcp server reconnecting", server=self.name, in_s=round(pause, 2))
            await self._sleep(pause)
            delay = min(delay * 2, settings.reconnect_max_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early only for ``stop``."""
        self._wake.clear()
        if self._stopping:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _session(self) -> None:
        settings = self._settings
        async with AsyncExitStack() as stack:
            client = Client(
                await self._transport(stack),
                cache=None,
                client_info=Implementation(name="agentstream", version=__version__),
            )
            async with asyncio.timeout(settings.connect_timeout_s):
                await stack.enter_async_context(client)
                tools = await _list_tools(client)
            self._wake.clear()
            self._broken_reason = None
            self._client = client
            self.health.connected = True
            self.health.connects += 1
            self.health.tool_count = len(tools)
            self._on_tools(self, tools)
            self._attempted.set()
            log.info("mcp server connected", server=self.name, tools=len(tools))
            while not self._stopping:
                try:
                    async with asyncio.timeout(settings.health_check_interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    await self._check(client)
                    continue
                if not self._stopping:
                    raise _SessionBroken(self._broken_reason or "the session broke")

    async def _check(self, client: Client) -> None:
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                tools = await _list_tools(client)
        except Exception as exc:
            self._broken_reason = f"health check failed: {describe_error(exc)}"
            raise _SessionBroken(self._broken_reason) from exc
        self.health.tool_count = len(tools)
        self._on_tools(self, tools)

    def _failed(self, reason: str) -> None:
        self.health.record_error(reason)
        log.warning("mcp server unavailable", server=self.name, error=reason[:200])

    async def _transport(self, stack: AsyncExitStack) -> Any:
        config = self.config
        if config.transport == "stdio":
            params = StdioServerParameters(
                command=config.command or "",
                args=list(config.args),
                env=expand_env(config.env) or None,
                cwd=config.cwd,
            )
            errlog = await asyncio.to_thread(self._open_errlog)
            stack.callback(errlog.close)
            return stdio_client(params, errlog=errlog)
        url = config.url or ""
        if not config.headers:
            return url
        http = httpx2.AsyncClient(headers=expand_env(config.headers), timeout=_HTTP_TIMEOUT)
        await stack.enter_async_context(http)
        return streamable_http_client(url, http_client=http)

    def _open_errlog(self) -> TextIO:
        if self._log_dir is None:
            return open(os.devnull, "w")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return open(self._log_dir / f"{self.name}.stderr.log", "a", encoding="utf-8")


async def _list_tools(client: Client) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a finished call's exception as seen (it is handled, or nobody waits any more)."""
    if not task.cancelled():
        task.exception()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0

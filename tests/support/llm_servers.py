"""A local HTTP server that speaks the OpenAI chat-completions and Anthropic Messages wire formats.

Tests script its replies (status, headers, body, delay, dropped connection, malformed JSON, or
a server-sent-event stream with a pause between events and an optional cut mid-stream) and
read back what arrived: the JSON bodies, the headers, and the arrival times measured by the
server's own clock (``time.monotonic()``), so timing assertions do not trust the client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Wire = Literal["openai", "anthropic"]


@dataclass(kw_only=True)
class Reply:
    status: int = 200
    body: Any = None
    """A dict/list is sent as JSON; ``str``/``bytes`` are sent raw as application/json."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reset: bool = False
    """Drop the connection (TCP abort) instead of answering."""
    events: list[tuple[str | None, Any]] | None = None
    """Answer as server-sent events: ``(event name or None, data)``; data dicts go as JSON."""
    event_gap_s: float = 0.0
    """Pause before each event after the first."""
    cut_after: int | None = None
    """Drop the connection (TCP abort) after sending this many events."""


@dataclass(frozen=True, kw_only=True)
class Arrival:
    wire: Wire
    at: float
    body: dict[str, Any]
    headers: dict[str, str]


def openai_completion(
    content: str | None = "Hello there.",
    *,
    tool_calls: list[tuple[str, str, str]] | None = None,
    model: str = "test-model",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A chat.completion body; ``tool_calls`` are ``(id, name, arguments JSON text)``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in tool_calls
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(
    text: str | None = "Hello there.",
    *,
    tool_uses: list[tuple[str, str, dict[str, Any]]] | None = None,
    model: str = "claude-test",
    input_tokens: int = 13,
    output_tokens: int = 5,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """A Messages API body; ``tool_uses`` are ``(id, name, input)``."""
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    for tid, name, arguments in tool_uses or []:
        content.append({"type": "tool_use", "id": tid, "name": name, "input": arguments})
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason or ("tool_use" if tool_uses else "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def openai_stream(
    pieces: list[str],
    *,
    model: str = "test-model",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    usage: bool = True,
) -> list[tuple[str | None, Any]]:
    """The chat.completion.chunk events of an answer written in ``pieces``, then usage."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": piece})) for piece in pieces]
    events.append((None, chunk({}, "stop")))
    if usage:
        events.append(
            (
                None,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )
        )
    events.append((None, "[DONE]"))
    return events


def anthropic_stream(
    pieces: list[str], *, model: str = "claude-test", input_tokens: int = 13, output_tokens: int = 5
) -> list[tuple[str | None, Any]]:
    """The Messages API stream events of a text answer written in ``pieces``."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", start),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for piece in pieces:
        delta = {"type": "text_delta", "text": piece}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def openai_error(status: int, message: str, *, type_: str, code: str | None = None) -> Reply:
    return Reply(
        status=status,
        body={"error": {"message": message, "type": type_, "param": None, "code": code}},
    )


def anthropic_error(status: int, type_: str, message: str) -> Reply:
    return Reply(
        status=status, body={"type": "error", "error": {"type": type_, "message": message}}
    )


class FakeLLMServer:
    """``async with FakeLLMServer() as server``: ``server.base_url`` ends in ``/v1`` for OpenAI
    clients; Anthropic clients use ``server.root_url``. Unscripted requests get the
    ``responder``'s reply for their arrival (when set and not None), else ``default``, else a
    plain answer."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._script: deque[Reply] = deque()
        self.default: Reply | None = None
        self.responder: Callable[[Arrival], Reply | None] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- control ---------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        self._script.extend(replies)

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def times(self) -> list[float]:
        return [a.at for a in self.arrivals]

    async def wait_for_arrivals(self, count: int, deadline_s: float = 10.0) -> None:
        deadline = time.monotonic() + deadline_s
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.arrivals)} of {count} requests arrived")
            await asyncio.sleep(0.01)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeLLMServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- handlers --------------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "anthropic")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": []})

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        await response.prepare(request)
        for index, (name, data) in enumerate(reply.events or []):
            if reply.cut_after is not None and index >= reply.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if index and reply.event_gap_s:
                await asyncio.sleep(reply.event_gap_s)
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {name}\n" if name else ""
            await response.write(f"{head}data: {text}\n\n".encode())
        await response.write_eof()
        return response

    async def _answer(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        at = time.monotonic()
        body = await request.json()
        arrival = Arrival(
            wire=wire,
            at=at,
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.arrivals.append(arrival)
        reply = self._script.popleft() if self._script else None
        if reply is None and self.responder is not None:
            reply = self.responder(arrival)
        if reply is None:
            reply = self.default
        if reply is None:
            reply = Reply(body=openai_completion() if wire == "openai" else anthropic_message())
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.reset:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if reply.events is not None:
            return await self._stream(request, reply)
        if isinstance(reply.body, str | bytes):
            raw = reply.body.encode() if isinstance(reply.body, str) else reply.body
            return web.Response(
                status=reply.status,
                body=raw,
                headers=reply.headers,
                content_type="application/json",
            )
        return web.Response(
            status=reply.status,
            text=json.dumps(reply.body if reply.body is not None else {}),
            headers=reply.headers,
            content_type="application/json",
        )

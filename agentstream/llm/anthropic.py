"""Anthropic Messages API through the official ``anthropic`` SDK.

Mapping: ``system`` messages become the top-level ``system`` text; assistant tool calls become
``tool_use`` blocks; ``tool`` results become ``tool_result`` blocks in a user turn. Consecutive
messages of the same role are merged (the API wants alternating turns, and every ``tool_result``
of an assistant turn in the next user turn). Empty text blocks are dropped (the API rejects them).
``stop_reason: refusal`` raises :class:`LLMContentPolicyError`. Usage counts cache reads and
writes as input tokens. SDK retries are off; nothing here logs contents or the key, and the SDK's
DEBUG "Request options" records (they hold the prompt) are filtered out at import.

``stream`` uses the SDK's ``messages.stream`` helper: text deltas go to the sink as they arrive
and the helper's final message goes through the same mapping as a whole answer. A connection
that drops mid-stream is an ``LLMConnectionError``, a stalled read an ``LLMTimeoutError``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anthropic
from pydantic import SecretStr

from agentstream.exceptions import ConfigError
from agentstream.llm.base import ChatMessage, LLMRequest, LLMResult, ToolCall, Usage
from agentstream.llm.exceptions import (
    LLMConnectionError,
    LLMContentPolicyError,
    LLMError,
    LLMInvalidResponseError,
    LLMTimeoutError,
)
from agentstream.llm.openai_compat import resolve_api_key
from agentstream.llm.pricing import PriceTable
from agentstream.llm.provider_errors import classify_status
from agentstream.llm.streaming import TokenSink, stream_errors
from agentstream.llm.structured import (
    OUTPUT_NAME,
    anthropic_answer,
    anthropic_output_tool,
    anthropic_tool_choice,
)
from agentstream.llm.toolnames import ToolNameMap
from agentstream.observability.logging import get_logger

log = get_logger(__name__)


class _DropRequestOptions(logging.Filter):
    """The SDK logs every request's options, prompt included, at DEBUG: drop those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Request options"))


_SDK_LOG = logging.getLogger("anthropic._base_client")
if not any(isinstance(f, _DropRequestOptions) for f in _SDK_LOG.filters):
    _SDK_LOG.addFilter(_DropRequestOptions())

API_KEY_ENV = "ANTHROPIC_API_KEY"
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}


class AnthropicLLM:
    """An :class:`~agentstream.llm.base.LLMClient` for the Anthropic Messages API."""

    provider = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        timeout_s: float = 60.0,
        prices: PriceTable | None = None,
        name: str | None = None,
        temperature: float | None = None,
    ) -> None:
        if not model:
            raise ConfigError("an Anthropic provider needs a model id")
        self.model = model
        self.base_url = base_url
        self.prices = prices or PriceTable()
        self.temperature = temperature
        self._name = name or f"{self.provider}:{model}"
        self._client = anthropic.AsyncAnthropic(
            api_key=resolve_api_key(api_key, API_KEY_ENV, base_url),
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
        )

    @property
    def name(self) -> str:
        return self._name

    def _params(self, request: LLMRequest, names: ToolNameMap) -> dict[str, Any]:
        system, messages = _conversation(request.messages, names)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if system:
            params["system"] = system
        tools = [
            {
                "name": names.wire(t.name),
                "description": t.description,
                "input_schema": t.input_schema,
            }
            for t in request.tools
        ]
        if request.output_schema is not None:  # structured output: a forced output tool
            params["tool_choice"] = anthropic_tool_choice(bool(tools))
            tools.append(anthropic_output_tool(request.output_schema))
        if tools:
            params["tools"] = tools
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            # in the body, not as an argument: recent SDKs no longer take ``temperature``
            params["extra_body"] = {"temperature": temperature}
        return params

    async def complete(self, request: LLMRequest) -> LLMResult:
        names = ToolNameMap.for_request(request)
        params = self._params(request, names)
        started = time.monotonic()
        try:
            response = await self._client.messages.create(**params)
        except anthropic.APIError as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # json.JSONDecodeError: the body is not JSON
            raise LLMInvalidResponseError(
                f"{self.provider}: response body is not valid JSON", provider=self.provider
            ) from exc
        result = self._result(response, names, request.output_schema)
        self._log_call(result, started)
        return result

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        """The answer streamed to ``sink`` as the server writes it (one attempt)."""
        names = ToolNameMap.for_request(request)
        params = self._params(request, names)
        started = time.monotonic()
        async with sink.attempt() as out:
            try:
                with stream_errors(self.provider, "event"):
                    async with self._client.messages.stream(**params) as events:
                        async for text in events.text_stream:
                            if text:
                                await out.write(text)
                        response = await events.get_final_message()
            except anthropic.APIError as exc:
                raise self._error(exc) from exc
            result = self._result(response, names, request.output_schema)
        self._log_call(result, started)
        return result

    def _log_call(self, result: LLMResult, started: float) -> None:
        log.debug(
            "llm call",
            provider=self.provider,
            model=result.model,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def health_check(self) -> bool:
        try:
            await self._client.models.list(limit=1)
        except (anthropic.AnthropicError, ValueError):
            return False
        return True

    async def aclose(self) -> None:
        await self._client.close()

    # --- mapping ---------------------------------------------------------------------------

    def _error(self, exc: anthropic.APIError) -> LLMError:
        if isinstance(exc, anthropic.APITimeoutError):
            return LLMTimeoutError(f"{self.provider}: request timed out", provider=self.provider)
        if isinstance(exc, anthropic.APIConnectionError):
            return LLMConnectionError(
                f"{self.provider}: connection failed ({type(exc.__cause__).__name__})",
                provider=self.provider,
            )
        if isinstance(exc, anthropic.APIStatusError):
            return classify_status(
                self.provider, exc.status_code, dict(exc.response.headers), exc.body
            )
        return LLMInvalidResponseError(
            f"{self.provider}: unexpected response ({type(exc).__name__})", provider=self.provider
        )

    def _tool_call(self, block: Any, names: ToolNameMap) -> ToolCall:
        arguments = block.input
        if not isinstance(arguments, dict) or not block.name:
            raise LLMInvalidResponseError(
                f"{self.provider}: tool_use block without a name or object input",
                provider=self.provider,
            )
        return ToolCall(call_id=str(block.id), name=names.original(block.name), arguments=arguments)

    def _result(
        self, response: Any, names: ToolNameMap, output_schema: dict[str, Any] | None = None
    ) -> LLMResult:
        blocks = getattr(response, "content", None)
        if blocks is None:
            raise LLMInvalidResponseError(
                f"{self.provider}: response has no content", provider=self.provider
            )
        stop = str(getattr(response, "stop_reason", None) or "end_turn")
        if stop == "refusal":
            raise LLMContentPolicyError(
                f"{self.provider}: the model refused (stop_reason refusal)", provider=self.provider
            )
        texts: list[str] = []
        calls: list[ToolCall] = []
        answer: str | None = None
        for block in blocks:
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(str(block.text or ""))
            elif kind == "tool_use" and output_schema is not None and block.name == OUTPUT_NAME:
                # structured output: the answer is the output tool's input, not the text
                answer = anthropic_answer(output_schema, block.input)
            elif kind == "tool_use":
                calls.append(self._tool_call(block, names))
        usage = getattr(response, "usage", None)
        if usage is None:
            raise LLMInvalidResponseError(
                f"{self.provider}: response has no usage", provider=self.provider
            )
        prompt = sum(
            int(getattr(usage, field, None) or 0)
            for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        completion = int(usage.output_tokens or 0)
        model = str(getattr(response, "model", None) or self.model)
        return LLMResult(
            content="".join(texts) if answer is None else answer,
            tool_calls=tuple(calls),
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=self.prices.cost_usd(prompt, completion, self.model, model),
            ),
            model=model,
            finish_reason="tool_calls" if calls else _STOP.get(stop, stop),
        )


def _conversation(
    messages: tuple[ChatMessage, ...], names: ToolNameMap
) -> tuple[str, list[dict[str, Any]]]:
    """``(system text, messages)`` in the Messages API shape."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.content:
                system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message, names)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _blocks(message: ChatMessage, names: ToolNameMap) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.call_id,
                "name": names.wire(call.name),
                "input": call.arguments,
            }
        )
    return blocks

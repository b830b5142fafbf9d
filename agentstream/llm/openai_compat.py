"""OpenAI-compatible chat completions through the official ``openai`` SDK.

``base_url`` makes it work with any server that speaks the format: OpenAI itself, vLLM
(``http://host:8000/v1``), Ollama (``http://localhost:11434/v1``), llama.cpp ``llama-server``
(``http://host:8080/v1``), LM Studio (``http://localhost:1234/v1``).

Mapping: ``system``/``user`` messages as they are; assistant tool calls as ``tool_calls`` with
JSON-text arguments; ``tool`` results as ``role: tool`` with ``tool_call_id``. Tool names are made
provider-safe per request (:class:`~agentstream.llm.toolnames.ToolNameMap`). The SDK's own retries
are off (``max_retries=0``): the project's retry policy and breakers decide. Request metadata is
never sent to the provider, and nothing here logs message contents or the API key.

``stream`` uses the SDK's streaming (``stream=True`` with ``stream_options.include_usage``); the
chunks are accumulated (llm/openai_stream.py: the SDK's own accumulator costs ~150 us a chunk)
and the completion goes through the same mapping as a whole one. A connection that drops
mid-stream is an ``LLMConnectionError`` and a stalled read an ``LLMTimeoutError`` (both
retriable).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Literal

import openai
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
from agentstream.llm.openai_stream import ChunkAccumulator
from agentstream.llm.pricing import PriceTable
from agentstream.llm.provider_errors import classify_status
from agentstream.llm.streaming import TokenSink, stream_errors
from agentstream.llm.structured import openai_response_format
from agentstream.llm.tokens import estimate_message_tokens, estimate_tokens
from agentstream.llm.toolnames import ToolNameMap
from agentstream.observability.logging import get_logger

log = get_logger(__name__)

API_KEY_ENV = "OPENAI_API_KEY"
PLACEHOLDER_KEY = "unused"  # local servers ignore the key, the SDK insists on one
_FINISH = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls"}


def resolve_api_key(api_key: SecretStr | None, env_var: str, base_url: str | None) -> str:
    """The explicit key, else ``env_var``, else a placeholder when a custom ``base_url`` is set."""
    if api_key is not None:
        return api_key.get_secret_value()
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    if base_url:
        return PLACEHOLDER_KEY
    raise ConfigError(f"no API key: set the provider's api_key or {env_var}")


class OpenAICompatLLM:
    """An :class:`~agentstream.llm.base.LLMClient` for OpenAI-compatible chat completions."""

    provider = "openai"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        timeout_s: float = 60.0,
        prices: PriceTable | None = None,
        name: str | None = None,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        temperature: float | None = None,
    ) -> None:
        if not model:
            raise ConfigError("an OpenAI-compatible provider needs a model id")
        self.model = model
        self.base_url = base_url
        self.prices = prices or PriceTable()
        self.max_tokens_param = max_tokens_param
        self.temperature = temperature
        self._name = name or f"{self.provider}:{model}"
        self._client = openai.AsyncOpenAI(
            api_key=resolve_api_key(api_key, API_KEY_ENV, base_url),
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
        )

    @property
    def name(self) -> str:
        return self._name

    def _params(self, request: LLMRequest, names: ToolNameMap) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [_message(m, names) for m in request.messages],
            self.max_tokens_param: request.max_tokens,
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": names.wire(t.name),
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in request.tools
            ]
        temperature = request.temperature if request.temperature is not None else self.temperature
        if temperature is not None:
            params["temperature"] = temperature
        if request.output_schema is not None:
            params["response_format"] = openai_response_format(request.output_schema)
        return params

    async def complete(self, request: LLMRequest) -> LLMResult:
        names = ToolNameMap.for_request(request)
        params = self._params(request, names)
        started = time.monotonic()
        try:
            response = await self._client.chat.completions.create(**params)
        except openai.APIError as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # json.JSONDecodeError: the body is not JSON
            raise LLMInvalidResponseError(
                f"{self.provider}: response body is not valid JSON", provider=self.provider
            ) from exc
        result = self._result(response, request, names)
        self._log_call(result, started)
        return result

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        """The answer streamed to ``sink`` as the server writes it (one attempt)."""
        names = ToolNameMap.for_request(request)
        params = self._params(request, names)
        chunks = ChunkAccumulator()
        started = time.monotonic()
        async with sink.attempt() as out:
            try:
                with stream_errors(self.provider, "chunk"):
                    events = await self._client.chat.completions.create(
                        **params, stream=True, stream_options={"include_usage": True}
                    )
                    async for chunk in events:
                        text = chunks.add(chunk)
                        if text:
                            await out.write(text)
            except openai.APIError as exc:
                raise self._error(exc) from exc
            completion = chunks.completion()
            if completion is None:
                raise LLMInvalidResponseError(
                    f"{self.provider}: the stream ended without a chunk", provider=self.provider
                )
            result = self._result(completion, request, names)
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
            await self._client.models.list()
        except (openai.APIError, ValueError):
            return False
        return True

    async def aclose(self) -> None:
        await self._client.close()

    # --- mapping ---------------------------------------------------------------------------

    def _error(self, exc: openai.APIError) -> LLMError:
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeoutError(f"{self.provider}: request timed out", provider=self.provider)
        if isinstance(exc, openai.APIConnectionError):
            return LLMConnectionError(
                f"{self.provider}: connection failed ({type(exc.__cause__).__name__})",
                provider=self.provider,
            )
        if isinstance(exc, openai.APIStatusError):
            return classify_status(
                self.provider, exc.status_code, dict(exc.response.headers), exc.body
            )
        return LLMInvalidResponseError(
            f"{self.provider}: unexpected response ({type(exc).__name__})", provider=self.provider
        )

    def _result(self, response: Any, request: LLMRequest, names: ToolNameMap) -> LLMResult:
        choices = getattr(response, "choices", None)
        if not choices:
            raise LLMInvalidResponseError(
                f"{self.provider}: response has no choices", provider=self.provider
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise LLMInvalidResponseError(
                f"{self.provider}: choice has no message", provider=self.provider
            )
        finish = str(getattr(choice, "finish_reason", None) or "stop")
        if finish == "content_filter":
            raise LLMContentPolicyError(
                f"{self.provider}: output stopped by the content filter",
                provider=self.provider,
            )
        calls = tuple(self._tool_call(c, names) for c in (message.tool_calls or ()))
        content = message.content or ""
        model = str(getattr(response, "model", None) or self.model)
        usage = getattr(response, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            prompt, completion = int(usage.prompt_tokens), int(usage.completion_tokens or 0)
        else:  # some local servers omit usage: report the project's estimate
            prompt = sum(estimate_message_tokens(m) for m in request.messages)
            completion = estimate_message_tokens(
                ChatMessage(role="assistant", content=content, tool_calls=calls)
            )
        cost = self.prices.cost_usd(prompt, completion, self.model, model)
        return LLMResult(
            content=content,
            tool_calls=calls,
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost),
            model=model,
            finish_reason="tool_calls" if calls else _FINISH.get(finish, finish),
        )

    def _tool_call(self, call: Any, names: ToolNameMap) -> ToolCall:
        function = getattr(call, "function", None)
        if function is None or not getattr(function, "name", None):
            raise LLMInvalidResponseError(
                f"{self.provider}: tool call without a function name", provider=self.provider
            )
        raw = function.arguments or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError as exc:
            raise LLMInvalidResponseError(
                f"{self.provider}: tool call arguments are not JSON "
                f"({estimate_tokens(raw)} tokens)",
                provider=self.provider,
            ) from exc
        if not isinstance(arguments, dict):
            raise LLMInvalidResponseError(
                f"{self.provider}: tool call arguments are not a JSON object",
                provider=self.provider,
            )
        return ToolCall(
            call_id=str(call.id or f"call_{function.name}"),
            name=names.original(function.name),
            arguments=arguments,
        )


def _message(message: ChatMessage, names: ToolNameMap) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {
                        "name": names.wire(call.name),
                        "arguments": json.dumps(call.arguments),
                    },
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}

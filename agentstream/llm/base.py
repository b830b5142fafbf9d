"""The LLM interface every provider implements, and the value types it speaks.

A provider takes the conversation (``ChatMessage`` list) and the tools on offer (``ToolSpec``)
and returns an ``LLMResult``: text content, tool calls, and token usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A tool invocation requested by the model. ``arguments`` is a JSON object."""

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One conversation entry. ``tool`` messages answer the call named by ``tool_call_id``."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON Schema of its arguments."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True, kw_only=True)
class LLMRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 1024
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = None
    """The agent's temperature; None: the provider's configured one (or the model's default)."""
    output_schema: dict[str, Any] | None = None
    """A JSON Schema the final answer must satisfy: providers use their native structured-output
    mode (OpenAI ``response_format``, Anthropic a forced output tool); the answer is JSON text."""


@dataclass(frozen=True, kw_only=True)
class LLMResult:
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str = "stop"

    def to_json(self) -> str:
        """Serialized for the step journal."""
        return json.dumps(
            {
                "content": self.content,
                "tool_calls": [
                    {"call_id": c.call_id, "name": c.name, "arguments": c.arguments}
                    for c in self.tool_calls
                ],
                "usage": [
                    self.usage.prompt_tokens,
                    self.usage.completion_tokens,
                    self.usage.cost_usd,
                ],
                "model": self.model,
                "finish_reason": self.finish_reason,
            }
        )

    @classmethod
    def from_json(cls, raw: str) -> LLMResult:
        data = json.loads(raw)
        prompt, completion, cost = data["usage"]
        return cls(
            content=data["content"],
            tool_calls=tuple(ToolCall(**c) for c in data["tool_calls"]),
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost),
            model=data["model"],
            finish_reason=data["finish_reason"],
        )


@runtime_checkable
class LLMClient(Protocol):
    """What the generation stage calls. Implementations raise ``LLMError`` subclasses."""

    @property
    def name(self) -> str: ...

    async def complete(self, request: LLMRequest) -> LLMResult: ...

    async def health_check(self) -> bool: ...

    async def aclose(self) -> None: ...

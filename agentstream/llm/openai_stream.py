"""Accumulating an OpenAI-compatible chat-completion stream into one completion.

The SDK's own ``ChatCompletionStreamState`` re-serialises the whole message snapshot on every
chunk (about 150 us per chunk measured here: 150 ms of CPU for a 1,000-token answer). This keeps
only what the provider's mapping reads (``OpenAICompatLLM._result``): the first choice's text,
its tool calls assembled from their fragments by index, the finish reason, the model and the
usage, at a few microseconds per chunk. The result has the attribute shape of a
``ChatCompletion`` (``choices[0].message.content`` / ``.tool_calls``, ``usage``, ``model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class _ToolCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChunkAccumulator:
    chunks: int = 0
    model: str | None = None
    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Any = None
    _calls: dict[int, _ToolCall] = field(default_factory=dict)

    def add(self, chunk: Any) -> str:
        """Take one chunk; returns its text delta (empty when it carries none)."""
        self.chunks += 1
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        choices = getattr(chunk, "choices", None) or ()
        first = next((c for c in choices if getattr(c, "index", 0) == 0), None)
        if first is None:
            return ""
        if first.finish_reason:
            self.finish_reason = first.finish_reason
        delta = first.delta
        for fragment in getattr(delta, "tool_calls", None) or ():
            self._tool_fragment(fragment)
        text = getattr(delta, "content", None) or ""
        if text:
            self.content.append(text)
        return text

    def _tool_fragment(self, fragment: Any) -> None:
        call = self._calls.setdefault(int(fragment.index or 0), _ToolCall())
        call.id = fragment.id or call.id
        function = fragment.function
        if function is not None:
            call.name += function.name or ""
            if function.arguments:
                call.arguments.append(function.arguments)

    def completion(self) -> Any:
        """The accumulated completion (ChatCompletion attribute shape); None without chunks."""
        if not self.chunks:
            return None
        calls = [
            SimpleNamespace(
                id=c.id,
                function=SimpleNamespace(name=c.name, arguments="".join(c.arguments)),
            )
            for _, c in sorted(self._calls.items())
        ]
        message = SimpleNamespace(content="".join(self.content), tool_calls=calls or None)
        choice = SimpleNamespace(message=message, finish_reason=self.finish_reason)
        return SimpleNamespace(choices=[choice], model=self.model, usage=self.usage)

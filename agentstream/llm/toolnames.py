"""Tool names as providers accept them, and back.

OpenAI and Anthropic accept tool names matching ``^[a-zA-Z0-9_-]{1,64}$``; project tools are named
like ``time.get_current_time`` (MCP server prefix + tool). A :class:`ToolNameMap` made per request
gives each name a valid, unique wire name and maps the model's answer back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from agentstream.llm.base import LLMRequest

MAX_WIRE_NAME = 64
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


class ToolNameMap:
    def __init__(self, names: Iterable[str]) -> None:
        self._to_wire: dict[str, str] = {}
        self._from_wire: dict[str, str] = {}
        for name in names:
            self.wire(name)

    @classmethod
    def for_request(cls, request: LLMRequest) -> ToolNameMap:
        """Names of the offered tools and of the tool calls already in the conversation."""
        return cls(
            [t.name for t in request.tools]
            + [c.name for m in request.messages for c in m.tool_calls]
        )

    def wire(self, name: str) -> str:
        """The provider-safe name for ``name`` (unchanged when it is already valid)."""
        known = self._to_wire.get(name)
        if known is not None:
            return known
        candidate = _INVALID.sub("_", name)[:MAX_WIRE_NAME] or "tool"
        digest = name
        while candidate in self._from_wire:  # two names sanitise to the same text
            digest = hashlib.sha1(digest.encode()).hexdigest()[:6]
            candidate = f"{candidate[: MAX_WIRE_NAME - 7]}_{digest}"
        self._to_wire[name] = candidate
        self._from_wire[candidate] = name
        return candidate

    def original(self, wire_name: str) -> str:
        """The project name for a name the model used (unknown names pass through)."""
        return self._from_wire.get(wire_name, wire_name)

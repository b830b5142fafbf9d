"""Deterministic token estimates: about four characters per token, rounded up.

Used for usage accounting by the local rule model and for history budgeting. It is an estimate,
not a tokenizer: the same text always gives the same number.
"""

from __future__ import annotations

import json

from agentstream.llm.base import ChatMessage

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators a chat format adds around every message."""


def estimate_tokens(text: str) -> int:
    """About ``len(text) / 4`` rounded up; 0 for empty text, at least 1 otherwise."""
    if not text:
        return 0
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def estimate_message_tokens(msg: ChatMessage) -> int:
    """Content, tool names and tool-call arguments, plus a small per-message overhead."""
    total = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(msg.content)
    for call in msg.tool_calls:
        total += estimate_tokens(call.name)
        total += estimate_tokens(json.dumps(call.arguments, sort_keys=True, default=str))
    if msg.name:
        total += estimate_tokens(msg.name)
    return total

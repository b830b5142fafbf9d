"""Build the model input from stored history within a token budget.

The system prompt is always kept; the oldest history entries are dropped first. Tool results
whose assistant tool-call message was dropped are dropped with it (providers reject orphans).
"""

from __future__ import annotations

import json
from typing import Any

from agentstream.llm.base import ChatMessage, ToolCall
from agentstream.llm.tokens import estimate_message_tokens


def to_chat_message(entry: dict[str, Any]) -> ChatMessage:
    calls = tuple(
        ToolCall(call_id=c["call_id"], name=c["name"], arguments=c["arguments"])
        for c in entry.get("tool_calls") or ()
    )
    return ChatMessage(
        role=entry["role"],
        content=entry.get("content") or "",
        tool_calls=calls,
        tool_call_id=entry.get("tool_call_id"),
        name=entry.get("name"),
    )


def history_entry(msg: ChatMessage, *, request_id: str, turn: int) -> dict[str, Any]:
    return {
        "role": msg.role,
        "content": msg.content,
        "tool_calls": [
            {"call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in msg.tool_calls
        ],
        "tool_call_id": msg.tool_call_id,
        "name": msg.name,
        "request_id": request_id,
        "turn": turn,
    }


def build_messages(
    system_prompt: str, history: list[dict[str, Any]], budget_tokens: int
) -> tuple[ChatMessage, ...]:
    system = ChatMessage(role="system", content=system_prompt)
    remaining = budget_tokens - estimate_message_tokens(system)
    kept: list[ChatMessage] = []
    for entry in reversed(history):
        msg = to_chat_message(entry)
        cost = estimate_message_tokens(msg)
        if kept and cost > remaining:
            break
        kept.append(msg)
        remaining -= cost
    kept.reverse()
    # Drop leading tool results whose calling assistant message fell outside the budget.
    while kept and kept[0].role == "tool":
        kept.pop(0)
    return (system, *kept)


def canonical_arguments(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))

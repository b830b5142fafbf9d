"""Native structured output: how an agent's output JSON Schema is asked of each provider.

OpenAI-compatible servers take ``response_format: {"type": "json_schema", ...}`` and answer with
JSON text. Anthropic has no such mode: the answer is asked for as a forced call of one output
tool whose ``input_schema`` is the output schema (its input is the answer). Anthropic tool input
must be an object, so a schema of another type is wrapped as ``{"value": <schema>}`` and
unwrapped from the answer. The generation stage validates the answer either way.
"""

from __future__ import annotations

import json
from typing import Any

OUTPUT_NAME = "agentstream_final_answer"
_WRAPPED_KEY = "value"


def openai_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` asking an OpenAI-compatible server for JSON matching ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": OUTPUT_NAME, "schema": schema, "strict": False},
    }


def _wrapped(schema: dict[str, Any]) -> bool:
    return schema.get("type") != "object"


def anthropic_output_tool(schema: dict[str, Any]) -> dict[str, Any]:
    """The output tool whose (forced) call carries the answer."""
    input_schema = (
        {"type": "object", "properties": {_WRAPPED_KEY: schema}, "required": [_WRAPPED_KEY]}
        if _wrapped(schema)
        else schema
    )
    return {
        "name": OUTPUT_NAME,
        "description": "Give your final answer: call this tool with it as the input.",
        "input_schema": input_schema,
    }


def anthropic_tool_choice(has_other_tools: bool) -> dict[str, Any]:
    """Force the output tool; with other tools on offer, force *a* tool call (``any``)."""
    return {"type": "any"} if has_other_tools else {"type": "tool", "name": OUTPUT_NAME}


def anthropic_answer(schema: dict[str, Any], tool_input: Any) -> str:
    """The answer (JSON text) from the output tool's input."""
    if _wrapped(schema) and isinstance(tool_input, dict):
        tool_input = tool_input.get(_WRAPPED_KEY)
    return json.dumps(tool_input, ensure_ascii=False)

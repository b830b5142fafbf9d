"""Built-in tools: ``calculator`` and ``current_time``. Both are read-only (no side effects).

Each tool checks the one argument it needs even though the registry validates against the JSON
schema first, so a direct ``call`` with bad input fails with :class:`ToolArgumentsError` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentstream.llm.base import ToolSpec
from agentstream.tools.calculator import MAX_EXPRESSION_LENGTH, calculate
from agentstream.tools.exceptions import ToolArgumentsError

_UTC_ALIASES = frozenset({"UTC", "GMT", "Z", "ZULU"})

Clock = Callable[[], datetime]
"""Returns the current moment as an aware datetime (injectable for tests)."""

CALCULATOR_SPEC = ToolSpec(
    name="calculator",
    description=(
        "Evaluate an arithmetic expression with numbers, + - * / // % ** and parentheses. "
        "Returns the result as text, e.g. '2 + 3' -> '5'."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_LENGTH,
                "description": "The arithmetic expression, e.g. '(1 + 2) * 3'.",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
)

CURRENT_TIME_SPEC = ToolSpec(
    name="current_time",
    description=(
        "The current local time in an IANA time zone, as ISO-8601 with the zone abbreviation, "
        "e.g. '2026-11-24T07:12:03+09:00 (JST)'."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "An IANA time zone name such as 'Asia/Tokyo' or 'UTC'.",
            }
        },
        "required": ["timezone"],
        "additionalProperties": False,
    },
)


def _string_argument(arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolArgumentsError(f"'{key}' must be a non-empty string")
    return value.strip()


class CalculatorTool:
    """Safe arithmetic (see :mod:`agentstream.tools.calculator`)."""

    @property
    def spec(self) -> ToolSpec:
        return CALCULATOR_SPEC

    @property
    def read_only(self) -> bool:
        return True

    async def call(self, arguments: dict[str, Any]) -> str:
        return calculate(_string_argument(arguments, "expression"))


class CurrentTimeTool:
    """Current local time in a time zone, formatted ``YYYY-MM-DDTHH:MM:SS+HH:MM (ABBR)``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or (lambda: datetime.now(UTC))

    @property
    def spec(self) -> ToolSpec:
        return CURRENT_TIME_SPEC

    @property
    def read_only(self) -> bool:
        return True

    async def call(self, arguments: dict[str, Any]) -> str:
        # ZoneInfo reads a file the first time it sees a key: keep that off the event loop.
        zone = await asyncio.to_thread(_zone, _string_argument(arguments, "timezone"))
        local = self._clock().astimezone(zone)
        return f"{local.isoformat(timespec='seconds')} ({local.tzname()})"


def _zone(name: str) -> ZoneInfo:
    if name.upper() in _UTC_ALIASES:
        name = "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # ValueError: malformed keys ('..', absolute paths); OSError: a directory such as 'Asia'.
        raise ToolArgumentsError(
            "unknown time zone; use an IANA name such as 'Europe/London' or 'UTC'"
        ) from exc


def builtin_tools() -> list[CalculatorTool | CurrentTimeTool]:
    """Fresh instances of every built-in tool."""
    return [CalculatorTool(), CurrentTimeTool()]

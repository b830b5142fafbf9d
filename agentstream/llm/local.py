"""``LocalRuleModel``: a deterministic, rule-based stand-in for an LLM. It is NOT a language model.

It lets the whole pipeline run offline and lets tests assert exact behaviour. It reads the
conversation and applies fixed rules, in this order:

1. the last user message contains ``[fail]`` → raise :class:`LLMUnavailableError`;
2. it contains ``[loop]`` → call the calculator with ``1 + 1`` again, every turn (max-turns tests);
3. tool results answer the latest assistant tool calls → a final answer built from those results
   (for calls made by ``call`` directives: the results themselves, see below);
4. ``call`` directives → call exactly those tools (below);
5. an arithmetic request → call the offered calculator tool (``calculator`` or ``*.calculator``);
6. a time request → call the offered time tool (``current_time`` or ``*current_time``, e.g. MCP's
   ``time.get_current_time``) with an IANA zone mapped from a city name (default ``UTC``);
7. anything else → a short fixed reply that does not echo the user's text.

The ``call`` directive (a development and test aid): a line of the user message that reads
``call <tool> <json-args>``, e.g. ``call calculator {"expression": "2 + 3"}`` or
``call crm.lookup {"customer": "c-42"}`` (the JSON object may span lines; without it the
arguments are ``{}``), makes the model call ``<tool>`` with those arguments, whatever the tool:
built-in, MCP, Python or an agent tool. Several directive lines make several calls in one turn.
The tool is called as written, offered or not, so the tool stage's own checks (permissions,
unknown names, argument validation) are exercised too. After the results come back the model
answers with them: one call's result verbatim, several as ``<tool>: <result>`` lines. A line that
starts with ``call <name>`` followed by other text is not a directive; one followed by invalid
JSON gets a short reply saying so, and no call.

Optional latency and seeded random failure injection simulate a real provider. Streamed
(``stream``), the answer is written word by word with the latency spread evenly between words.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentstream.exceptions import ConfigError
from agentstream.llm.base import ChatMessage, LLMRequest, LLMResult, ToolCall, ToolSpec, Usage
from agentstream.llm.exceptions import LLMUnavailableError
from agentstream.llm.streaming import TokenSink, words
from agentstream.llm.tokens import estimate_message_tokens

MODEL_NAME = "local-rules"
FAIL_TRIGGER = "[fail]"
LOOP_TRIGGER = "[loop]"
LOOP_EXPRESSION = "1 + 1"


@dataclass(frozen=True, kw_only=True)
class _Decision:
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class LocalRuleModel:
    """A deterministic rule-based stand-in for an LLM (NOT a language model); see the module doc.

    ``calls`` counts ``complete`` invocations, failed ones included.
    """

    def __init__(self, latency_s: float = 0.0, failure_rate: float = 0.0, seed: int = 0) -> None:
        if latency_s < 0:
            raise ConfigError("local model latency_s must be >= 0")
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigError("local model failure_rate must be between 0 and 1")
        self.latency_s = latency_s
        self.failure_rate = failure_rate
        self.calls = 0
        self._random = random.Random(seed)

    @property
    def name(self) -> str:
        return MODEL_NAME

    async def complete(self, request: LLMRequest) -> LLMResult:
        self.calls += 1
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        return self._respond(request)

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        """The same answer as :meth:`complete`, written word by word over ``latency_s``."""
        self.calls += 1
        async with sink.attempt() as out:
            result = self._respond(request)
            pieces = words(result.content)
            pause = self.latency_s / max(1, len(pieces))
            if not pieces and pause > 0:
                await asyncio.sleep(pause)
            for piece in pieces:
                if pause > 0:
                    await asyncio.sleep(pause)
                await out.write(piece)
        return result

    def _respond(self, request: LLMRequest) -> LLMResult:
        if self.failure_rate > 0 and self._random.random() < self.failure_rate:
            raise LLMUnavailableError("local rule model: injected random failure")
        decision = _decide(request)
        output = ChatMessage(
            role="assistant", content=decision.content, tool_calls=decision.tool_calls
        )
        usage = Usage(
            prompt_tokens=sum(estimate_message_tokens(m) for m in request.messages),
            completion_tokens=estimate_message_tokens(output),
            cost_usd=0.0,
        )
        return LLMResult(
            content=decision.content,
            tool_calls=decision.tool_calls,
            usage=usage,
            model=MODEL_NAME,
            finish_reason="tool_calls" if decision.tool_calls else "stop",
        )

    async def health_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


# --- the rules ------------------------------------------------------------------------------


def _decide(request: LLMRequest) -> _Decision:
    messages = request.messages
    turn = sum(1 for m in messages if m.role == "assistant")
    user_text = _last_user_text(messages)

    if user_text is not None and FAIL_TRIGGER in user_text:
        raise LLMUnavailableError("local rule model: [fail] trigger in the user message")
    if user_text is not None and LOOP_TRIGGER in user_text:
        calc = _find_tool(request.tools, _is_calculator)
        name = calc.name if calc is not None else "calculator"
        arg = _argument_name(calc, "expression")
        return _call(turn, name, {arg: LOOP_EXPRESSION})

    directives = call_directives(user_text) if user_text is not None else []
    answered = _answered_calls(messages)
    if answered and directives:
        return _Decision(content=_directive_answer(answered))
    if answered:
        return _Decision(content=" ".join(_describe_result(c, r) for c, r in answered))

    if user_text is None:
        return _Decision(content="(local rule model) There is no user message to answer.")
    if directives:
        return _directed(turn, directives)
    return _natural(request, turn, user_text)


def _natural(request: LLMRequest, turn: int, user_text: str) -> _Decision:
    """Rules 5-7: arithmetic, time, anything else."""
    expression = arithmetic_expression(user_text)
    if expression is not None:
        calc = _find_tool(request.tools, _is_calculator)
        if calc is None:
            return _Decision(content=_needs_tool("calculator"))
        return _call(turn, calc.name, {_argument_name(calc, "expression"): expression})
    if _is_time_request(user_text):
        clock = _find_tool(request.tools, _is_time_tool)
        if clock is None:
            return _Decision(content=_needs_tool("current time"))
        return _call(turn, clock.name, {_argument_name(clock, "timezone"): timezone_for(user_text)})
    words = len(user_text.split())
    return _Decision(content=f"(local rule model) I received your message of {words} words.")


# --- the call directive ---------------------------------------------------------------------

_DIRECTIVE = re.compile(
    r"^[ \t]*call[ \t]+([A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127})[ \t]*", re.MULTILINE
)
_JSON = json.JSONDecoder()


@dataclass(frozen=True, kw_only=True)
class Directive:
    """One ``call <tool> <json-args>`` line; ``problem`` says why its arguments are unusable."""

    tool: str
    arguments: dict[str, Any]
    problem: str = ""


def call_directives(text: str) -> list[Directive]:
    """The ``call`` directives in a user message, in order (see the module doc)."""
    found: list[Directive] = []
    for match in _DIRECTIVE.finditer(text):
        rest = text[match.end() :]
        if rest[:1] in ("", "\n", "\r"):
            found.append(Directive(tool=match.group(1), arguments={}))
        elif rest[:1] in ("{", "["):
            found.append(_with_arguments(match.group(1), rest))
    return found


def _with_arguments(tool: str, rest: str) -> Directive:
    try:
        value, _ = _JSON.raw_decode(rest)
    except json.JSONDecodeError as exc:
        return Directive(tool=tool, arguments={}, problem=f"invalid JSON ({exc.msg})")
    if not isinstance(value, dict):
        return Directive(tool=tool, arguments={}, problem="the arguments must be a JSON object")
    return Directive(tool=tool, arguments=value)


def _directed(turn: int, directives: list[Directive]) -> _Decision:
    bad = next((d for d in directives if d.problem), None)
    if bad is not None:
        return _Decision(
            content=f"(local rule model) I cannot run 'call {bad.tool}': {bad.problem}. "
            'Write: call <tool> {"argument": "value"}'
        )
    return _Decision(
        tool_calls=tuple(
            ToolCall(call_id=f"call_{turn}_{index}", name=d.tool, arguments=d.arguments)
            for index, d in enumerate(directives)
        )
    )


def _directive_answer(answered: list[tuple[ToolCall | None, ChatMessage]]) -> str:
    """The results themselves: one verbatim, several as ``<tool>: <result>`` lines."""
    if len(answered) == 1:
        return answered[0][1].content
    return "\n".join(
        f"{call.name if call is not None else (result.name or 'tool')}: {result.content}"
        for call, result in answered
    )


def _last_user_text(messages: tuple[ChatMessage, ...]) -> str | None:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return None


def _call(turn: int, name: str, arguments: dict[str, Any]) -> _Decision:
    return _Decision(
        tool_calls=(ToolCall(call_id=f"call_{turn}_0", name=name, arguments=arguments),)
    )


def _needs_tool(what: str) -> str:
    return f"(local rule model) I would need the {what} tool to answer that, but it is not offered."


# --- tools on offer -------------------------------------------------------------------------


def _is_calculator(name: str) -> bool:
    return name == "calculator" or name.endswith(".calculator")


def _is_time_tool(name: str) -> bool:
    return name.endswith("current_time")  # current_time, get_current_time, time.get_current_time


def _find_tool(tools: tuple[ToolSpec, ...], predicate: Callable[[str], bool]) -> ToolSpec | None:
    return next((t for t in tools if predicate(t.name)), None)


def _argument_name(tool: ToolSpec | None, preferred: str) -> str:
    """``preferred`` if the schema has it, else the first string property, else ``preferred``."""
    if tool is None:
        return preferred
    properties = tool.input_schema.get("properties")
    if not isinstance(properties, dict) or preferred in properties:
        return preferred
    for key, schema in properties.items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            return str(key)
    return preferred


# --- tool results ---------------------------------------------------------------------------

# Tool messages carry no error flag. A result counts as failed when it starts with "Error"
# (ToolRegistry writes "Error: ..."), carries a TOOL_* code, or does not have the shape the known
# tools return: a number for the calculator, an ISO date-time for the time tool.
_ERROR_START = re.compile(r"error\b", re.IGNORECASE)
_ERROR_CODE = re.compile(r"\bTOOL_[A-Z_]+\b")
_NUMBER_RESULT = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", re.IGNORECASE)
_TIME_RESULT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _looks_failed(name: str, content: str) -> bool:
    if _ERROR_START.match(content) or _ERROR_CODE.search(content):
        return True
    if _is_calculator(name):
        return _NUMBER_RESULT.fullmatch(content) is None
    if _is_time_tool(name):
        return _TIME_RESULT.search(content) is None
    return False


def _answered_calls(messages: tuple[ChatMessage, ...]) -> list[tuple[ToolCall | None, ChatMessage]]:
    """Tool results after the latest assistant message, if that message requested tools."""
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    if last_assistant < 0 or not messages[last_assistant].tool_calls:
        return []
    tail = messages[last_assistant + 1 :]
    if not tail or any(m.role != "tool" for m in tail):
        return []
    calls = {c.call_id: c for c in messages[last_assistant].tool_calls}
    return [(calls.get(m.tool_call_id or ""), m) for m in tail]


def _describe_result(call: ToolCall | None, result: ChatMessage) -> str:
    name = call.name if call is not None else (result.name or "tool")
    content = result.content.strip()
    if _looks_failed(name, content):
        return f"The {name} tool failed: {content}"
    if _is_calculator(name):
        return f"The answer is {content}."
    if _is_time_tool(name):
        zone = next(
            (v for v in (call.arguments.values() if call else ()) if isinstance(v, str)), ""
        )
        where = f" in {zone}" if zone else ""
        return f"The current time{where} is {content}."
    return f"The {name} tool returned: {content}"


# --- arithmetic requests --------------------------------------------------------------------

_NUM = r"(-?\d+(?:\.\d+)?)"
_WORD_FORMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"\badd\s+{_NUM}\s+(?:and|to|plus)\s+{_NUM}"), "{0} + {1}"),
    (re.compile(rf"\bsum of\s+{_NUM}\s+and\s+{_NUM}"), "{0} + {1}"),
    (re.compile(rf"\bsubtract\s+{_NUM}\s+from\s+{_NUM}"), "{1} - {0}"),
    (re.compile(rf"\bmultiply\s+{_NUM}\s+(?:by|and|with|times)\s+{_NUM}"), "{0} * {1}"),
    (re.compile(rf"\bproduct of\s+{_NUM}\s+and\s+{_NUM}"), "{0} * {1}"),
    (re.compile(rf"\bdivide\s+{_NUM}\s+by\s+{_NUM}"), "{0} / {1}"),
)
_INFIX_WORDS: tuple[tuple[str, str], ...] = (
    (r"\bmultiplied by\b", "*"),
    (r"\bdivided by\b", "/"),
    (r"\bto the power of\b", "**"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\btimes\b", "*"),
    (r"\bmod(?:ulo)?\b", "%"),
    ("\u00d7", "*"),  # multiplication sign
    ("\u00f7", "/"),  # division sign
    (r"\^", "**"),
    (r"(?<=\d)\s*x\s*(?=\d)", " * "),
)
_ASKS_FOR_MATH = re.compile(
    r"\b(?:what is|what's|whats|how much is|calculate|compute|evaluate|solve)\b"
)
_EXPRESSION_RUN = re.compile(r"[\d.\s+\-*/%()]+")
_HAS_OPERATION = re.compile(r"\d[\s)]*(?:\*\*|//|[+\-*/%])[\s(]*-?[\d(.]")


def arithmetic_expression(text: str) -> str | None:
    """The arithmetic expression a message asks for, in calculator syntax, or ``None``.

    ``"add 2 and 3"`` → ``"2 + 3"``; ``"what is 2 + 3"`` → ``"2 + 3"``;
    ``"subtract 2 from 10"`` → ``"10 - 2"``; ``"calculate (1+2)*3"`` → ``"(1+2)*3"``.
    """
    lowered = text.lower()
    for pattern, template in _WORD_FORMS:
        match = pattern.search(lowered)
        if match:
            return template.format(*(_operand(g) for g in match.groups()))
    for word, symbol in _INFIX_WORDS:
        lowered = re.sub(word, f" {symbol} ", lowered)
    candidates = [run.strip().rstrip(".").strip() for run in _EXPRESSION_RUN.findall(lowered)]
    candidates = [c for c in candidates if _HAS_OPERATION.search(c)]
    if not candidates:
        return None
    expression = " ".join(max(candidates, key=len).split())
    bare = " ".join(re.sub(r"[\s?=!.]+$", "", lowered).split())
    if _ASKS_FOR_MATH.search(lowered) or bare == expression:
        return expression
    return None


def _operand(number: str) -> str:
    return f"({number})" if number.startswith("-") else number


# --- time requests --------------------------------------------------------------------------

_TIME_REQUEST = re.compile(
    r"\bwhat time\b|\bcurrent time\b|\btime (?:is it|now|right now|in|at)\b"
    r"|\b(?:what's|what is|tell me) the time\b"
)
_IANA_ZONE = re.compile(r"\b([A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z_\-]+){1,2})\b")
CITY_ZONES: dict[str, str] = {
    "amsterdam": "Europe/Amsterdam",
    "auckland": "Pacific/Auckland",
    "bangkok": "Asia/Bangkok",
    "beijing": "Asia/Shanghai",
    "berlin": "Europe/Berlin",
    "boston": "America/New_York",
    "buenos aires": "America/Argentina/Buenos_Aires",
    "cairo": "Africa/Cairo",
    "chicago": "America/Chicago",
    "delhi": "Asia/Kolkata",
    "denver": "America/Denver",
    "dubai": "Asia/Dubai",
    "dublin": "Europe/Dublin",
    "hong kong": "Asia/Hong_Kong",
    "honolulu": "Pacific/Honolulu",
    "istanbul": "Europe/Istanbul",
    "jakarta": "Asia/Jakarta",
    "johannesburg": "Africa/Johannesburg",
    "kyiv": "Europe/Kyiv",
    "lagos": "Africa/Lagos",
    "lisbon": "Europe/Lisbon",
    "london": "Europe/London",
    "los angeles": "America/Los_Angeles",
    "madrid": "Europe/Madrid",
    "mexico city": "America/Mexico_City",
    "moscow": "Europe/Moscow",
    "mumbai": "Asia/Kolkata",
    "nairobi": "Africa/Nairobi",
    "new york": "America/New_York",
    "nyc": "America/New_York",
    "paris": "Europe/Paris",
    "rome": "Europe/Rome",
    "san francisco": "America/Los_Angeles",
    "sao paulo": "America/Sao_Paulo",
    "são paulo": "America/Sao_Paulo",
    "seattle": "America/Los_Angeles",
    "seoul": "Asia/Seoul",
    "shanghai": "Asia/Shanghai",
    "singapore": "Asia/Singapore",
    "stockholm": "Europe/Stockholm",
    "sydney": "Australia/Sydney",
    "tokyo": "Asia/Tokyo",
    "toronto": "America/Toronto",
    "vancouver": "America/Vancouver",
    "warsaw": "Europe/Warsaw",
    "zurich": "Europe/Zurich",
}
_CITY_PATTERNS = tuple(
    (re.compile(rf"\b{re.escape(city)}\b"), zone)
    for city, zone in sorted(CITY_ZONES.items(), key=lambda item: -len(item[0]))
)
DEFAULT_ZONE = "UTC"


def _is_time_request(text: str) -> bool:
    return _TIME_REQUEST.search(text.lower()) is not None


def timezone_for(text: str) -> str:
    """An IANA zone for a message: an explicit zone name, a known city, else ``UTC``."""
    explicit = _IANA_ZONE.search(text)
    if explicit:
        return explicit.group(1)
    lowered = text.lower()
    for pattern, zone in _CITY_PATTERNS:
        if pattern.search(lowered):
            return zone
    return DEFAULT_ZONE

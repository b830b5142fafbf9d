"""A dict-backed tool registry that runs tools by name (the ``ToolExecutor`` implementation).

Duplicate names are refused unless ``replace=True`` (the first registration wins; MCP tools are
namespaced ``server.tool`` and built-in names have no dot, see :mod:`agentstream.tools.mcp`).
Each entry carries its :class:`ToolPolicy` (the tool's own, with ``overrides`` applied) and an
optional timeout that replaces the caller's default. ``execute`` never raises for tool failures:
unknown tool, arguments that fail the tool's JSON schema, timeout and any exception from the tool
each become a ``ToolOutcome`` with ``is_error=True``, a stable ``error_code`` and a content that
starts with ``"Error: "``. Arguments are validated before the tool is called.

Logs carry tool names, codes and durations only, never arguments or results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators
from jsonschema.protocols import Validator

from agentstream.llm.base import ToolSpec
from agentstream.tools.base import CallContext, KeyedTool, Tool, ToolOutcome, ToolPolicy
from agentstream.tools.builtin import builtin_tools
from agentstream.tools.exceptions import (
    DuplicateToolError,
    ToolArgumentsError,
    ToolError,
    ToolExecutionError,
    ToolNotFoundError,
    ToolTimeoutError,
)
from agentstream.tools.policy import ToolOverrides

logger = logging.getLogger(__name__)

ERROR_PREFIX = "Error: "
_MAX_SCHEMA_VALUE_CHARS = 80
# Built-in tools whose policy differs from "read_only -> cacheable": the time changes.
BUILTIN_POLICIES = {"current_time": ToolPolicy(read_only=True, idempotent=True, cache_ttl_s=0)}


@dataclass(frozen=True)
class _Entry:
    tool: Tool
    validator: Validator
    policy: ToolPolicy
    timeout_s: float | None
    breaker: str | None


class ToolRegistry:
    """Tools by name, in registration order."""

    def __init__(
        self, tools: Iterable[Tool] = (), *, overrides: ToolOverrides | None = None
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._overrides = overrides or ToolOverrides()
        for tool in tools:
            self.register(tool, policy=BUILTIN_POLICIES.get(tool.spec.name))

    def register(
        self,
        tool: Tool,
        *,
        replace: bool = False,
        policy: ToolPolicy | None = None,
        timeout_s: float | None = None,
        breaker: str | None = None,
    ) -> None:
        """Add ``tool``; a second tool with the same name raises unless ``replace`` is true.

        ``policy`` defaults to the tool's own ``policy`` attribute if it has one, else to one
        derived from ``tool.read_only``; configured overrides apply
        on top, as they do to ``timeout_s`` (``None``: the caller's timeout). ``breaker`` names
        the circuit breaker that guards the tool (default: the ``server`` of a dotted
        ``server.tool`` name, none for names without a dot).
        """
        name = tool.spec.name
        if name in self._entries and not replace:
            raise DuplicateToolError(f"a tool named {name!r} is already registered")
        if policy is None:
            own = getattr(tool, "policy", None)  # Python and MCP tools carry theirs
            policy = (
                own
                if isinstance(own, ToolPolicy)
                else ToolPolicy(read_only=tool.read_only, idempotent=tool.read_only)
            )
        self._entries[name] = _Entry(
            tool=tool,
            validator=_compile_schema(tool.spec),
            policy=self._overrides.apply(name, policy),
            timeout_s=self._overrides.timeout_for(name) or timeout_s,
            breaker=breaker or (name.split(".", 1)[0] if "." in name else None),
        )

    def unregister(self, name: str) -> None:
        """Remove a tool (no error if it is not registered)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Tool:
        entry = self._entries.get(name)
        if entry is None:
            raise ToolNotFoundError(f"unknown tool {name!r}")
        return entry.tool

    def has(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def read_only(self, name: str) -> bool:
        """Whether the tool has no side effects; ``False`` for unknown tools (the safe answer)."""
        return self.policy(name).read_only

    def policy(self, name: str) -> ToolPolicy:
        """The tool's effective policy; the all-false default for unknown tools."""
        entry = self._entries.get(name)
        return entry.policy if entry is not None else ToolPolicy()

    def breaker_scope(self, name: str) -> str | None:
        """The circuit breaker guarding ``name`` (see ``register``); None: unguarded or unknown."""
        entry = self._entries.get(name)
        return entry.breaker if entry is not None else None

    def timeout_for(self, name: str, default_s: float) -> float:
        entry = self._entries.get(name)
        return entry.timeout_s if entry is not None and entry.timeout_s else default_s

    def specs(
        self, allowed: list[str] | None = None, *, call: CallContext | None = None
    ) -> list[ToolSpec]:
        """Specs of all tools, or of those named in ``allowed`` (unknown names are skipped)."""
        if allowed is None:
            return [e.tool.spec for e in self._entries.values()]
        wanted = set(allowed)
        return [e.tool.spec for name, e in self._entries.items() if name in wanted]

    async def execute(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float,
        call: CallContext | None = None,
    ) -> ToolOutcome:
        """Validate and run one call; every failure comes back as an error outcome."""
        started = time.perf_counter()
        entry = self._entries.get(name)
        if entry is None:
            return _failure(ToolNotFoundError(f"unknown tool {name!r}"), name, started)
        problem = _first_schema_problem(entry.validator, arguments)
        if problem is not None:
            error: ToolError = ToolArgumentsError(f"invalid arguments for tool {name!r}: {problem}")
            return _failure(error, name, started)
        timeout_s = entry.timeout_s or timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                if entry.policy.accepts_idempotency_key and isinstance(entry.tool, KeyedTool):
                    key = call.idempotency_key if call is not None else None
                    content = await entry.tool.call_with_key(arguments, key or None)
                else:
                    content = await entry.tool.call(arguments)
        except TimeoutError:
            error = ToolTimeoutError(f"tool {name!r} did not finish within {timeout_s:g}s")
            return _failure(error, name, started)
        except ToolError as exc:
            return _failure(exc, name, started)
        except Exception as exc:  # noqa: BLE001 - any tool failure becomes an outcome, by contract
            message = str(exc) or type(exc).__name__
            return _failure(ToolExecutionError(f"tool {name!r} failed: {message}"), name, started)
        return ToolOutcome(content=content, duration_ms=_elapsed_ms(started))


def default_registry() -> ToolRegistry:
    """A registry holding the built-in tools (``calculator``, ``current_time``)."""
    return ToolRegistry(builtin_tools())


def _compile_schema(spec: ToolSpec) -> Validator:
    """Check the tool's input schema once, at registration, and build its validator."""
    cls = validators.validator_for(spec.input_schema)
    try:
        cls.check_schema(spec.input_schema)
    except schema_errors.SchemaError as exc:
        raise ToolError(f"tool {spec.name!r} has an invalid input schema: {exc.message}") from exc
    return cls(spec.input_schema)


def _first_schema_problem(validator: Validator, arguments: Any) -> str | None:
    """A description of the most relevant schema violation that never repeats argument values."""
    error = schema_errors.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    if error.validator in ("required", "additionalProperties"):
        return str(error.message)  # names properties only, no values
    where = "/".join(str(part) for part in error.absolute_path) or "arguments"
    expected = repr(error.validator_value)
    if len(expected) > _MAX_SCHEMA_VALUE_CHARS:
        expected = expected[: _MAX_SCHEMA_VALUE_CHARS - 3] + "..."
    return f"{where} must satisfy {error.validator}={expected}"


def _failure(error: ToolError, name: str, started: float) -> ToolOutcome:
    duration_ms = _elapsed_ms(started)
    logger.info(
        "tool call failed: tool=%s code=%s duration_ms=%.1f", name[:64], error.code, duration_ms
    )
    return ToolOutcome(
        content=f"{ERROR_PREFIX}{error}",
        is_error=True,
        error_code=error.code,
        duration_ms=duration_ms,
    )


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0

"""One agent's definition: what it is told, which model route it uses, what it may call, its limits.

The same model reads a TOML/YAML file (one agent per file) and is built in Python
(``Agent(name="support", instructions="...", tools=["calculator"])``). Unset optional fields
mean "the deployment's setting" (``limits.max_turns``, ``limits.history_token_budget``, the
default route, ...). ``instructions_file`` and ``output_schema_file`` are read when the catalog
loads, relative to the definition's file; the definition the catalog keeps holds their content.

The agent's **version** is the first 12 hex digits of the SHA-256 of its canonical definition
(the resolved fields as sorted, compact JSON): editing the instructions, the tools, a limit or
the schema (or the file they are read from) gives a new version; moving a file does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from agentstream.config import AdmissionLimits

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
AGENT_TOOL_PREFIX = "agent."
VERSION_CHARS = 12


class CachePolicy(BaseModel):
    """Response-cache policy of one agent: ``enabled`` None follows ``admission.cache_enabled``;
    ``ttl_s`` None follows ``admission.cache_ttl_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool | None = None
    ttl_s: int | None = Field(default=None, ge=1)


class Agent(BaseModel):
    """A named agent. Only ``name`` and ``instructions`` (or ``instructions_file``) are required."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    instructions: str | None = None
    """The system prompt."""
    instructions_file: Path | None = None
    """A text file holding the instructions (relative to the definition's file)."""
    model: str | None = None
    """A model route (``llm.routes``), a provider (``llm.providers``) or ``local``; None: the
    deployment's route selection (request ``model`` metadata, tenant route, default)."""
    tools: tuple[str, ...] = ()
    """Globs over tool names (built-in ``calculator``, MCP ``server.tool``, Python tools,
    ``agent.<name>``); ``["*"]`` offers every tool, ``[]`` none."""
    max_turns: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    history_budget: int | None = Field(default=None, ge=100)
    """Tokens of history sent to the model (default ``limits.history_token_budget``)."""
    output_schema: dict[str, Any] | None = None
    """A JSON Schema the final answer (JSON text) must satisfy."""
    output_schema_file: Path | None = None
    limits: AdmissionLimits | None = None
    """Rate limits and budgets of this agent alone (per tenant, on top of the tenant's own)."""
    cache: CachePolicy = CachePolicy()
    stream: bool | None = None
    """Stream answers to ``agent.stream`` when the request does not say (None: the
    ``streaming.default`` setting)."""

    def canonical(self) -> str:
        """The definition as it is versioned: resolved content, no file paths, sorted JSON."""
        data = self.model_dump(
            mode="json", exclude={"instructions_file", "output_schema_file"}, exclude_none=True
        )
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose version is computed again (it may differ)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("version", None)
        return copy

    @cached_property
    def version(self) -> str:
        """Computed once per definition object (it is frozen)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:VERSION_CHARS]

    @property
    def system_prompt(self) -> str:
        return self.instructions or ""

    def offers(self, tool: str) -> bool:
        """Whether ``tool`` is one of this agent's tools (a glob of ``tools`` matches it)."""
        return any(p == tool or fnmatchcase(tool, p) for p in self.tools)

    def delegates_to(self) -> list[str]:
        """Agents named exactly (no glob) as ``agent.<name>`` tools."""
        return [
            p.removeprefix(AGENT_TOOL_PREFIX)
            for p in self.tools
            if p.startswith(AGENT_TOOL_PREFIX) and not any(c in p for c in "*?[")
        ]

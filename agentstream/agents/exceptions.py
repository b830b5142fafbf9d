"""Errors of the agent catalog.

::

    ConfigError
    └── AgentDefinitionError     a definition refused at start-up (source, field, reason)
    AgentStreamError
    ├── UnknownAgentError        UNKNOWN_AGENT: a request names an agent the catalog lacks
    └── InvalidOutputError       INVALID_OUTPUT: the answer fails the output schema after repair
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ConfigError, ErrorCode


class AgentDefinitionError(ConfigError):
    """A broken agent definition: ``source`` (file or module), ``field`` and ``reason``."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        where = f"{source}: {field}" if field else source
        super().__init__(f"agent definition {where}: {reason}")


class UnknownAgentError(AgentStreamError):
    code = ErrorCode.UNKNOWN_AGENT


class InvalidOutputError(AgentStreamError):
    """INVALID_OUTPUT: the final answer did not satisfy the agent's output schema, also after
    one repair turn. ``log_reason`` names where and which rule failed, never content."""

    code = ErrorCode.INVALID_OUTPUT

    def __init__(self, log_reason: str) -> None:
        self.log_reason = log_reason
        super().__init__(f"the answer does not satisfy the output schema ({log_reason})")

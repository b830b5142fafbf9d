"""Errors of the agent catalog.

::

    ConfigError
    └── AgentDefinitionError     a definition refused at start-up (source, field, reason)
    AgentStreamError
    └── UnknownAgentError        UNKNOWN_AGENT: a request names an agent the catalog lacks
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

"""Named agents: definitions (TOML/YAML files, Python ``Agent`` objects, entry points) and the
catalog a worker serves them from. See docs/agents.md."""

from agentstream.agents.catalog import AgentCatalog, build_catalog, default_agent
from agentstream.agents.definition import Agent, CachePolicy
from agentstream.agents.exceptions import (
    AgentDefinitionError,
    InvalidOutputError,
    UnknownAgentError,
)
from agentstream.agents.output import OutputCheck, check_output

__all__ = [
    "Agent",
    "AgentCatalog",
    "AgentDefinitionError",
    "CachePolicy",
    "InvalidOutputError",
    "OutputCheck",
    "UnknownAgentError",
    "build_catalog",
    "check_output",
    "default_agent",
]

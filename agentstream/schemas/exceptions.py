"""Serialization errors.

::

    SerializationError               bad bytes, bad record, bad schema
    ├── SchemaNotFoundError          unknown schema id or subject
    └── SchemaRegistryError          registry unreachable or failing (retriable)
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class SerializationError(AgentStreamError):
    """A record could not be encoded or decoded; ``reason`` says why (never the data)."""

    code = ErrorCode.SERIALIZATION_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaNotFoundError(SerializationError):
    """The schema id (or subject) is known neither locally nor to the registry."""

    code = ErrorCode.SCHEMA_NOT_FOUND


class SchemaRegistryError(SerializationError):
    """The schema registry could not be reached or answered with a server error."""

    code = ErrorCode.SCHEMA_REGISTRY_ERROR
    retriable = True

"""Errors of the embedded development stack."""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class EmbeddedStackError(AgentStreamError):
    """A bundled broker or Redis binary is missing, failed to start, or never became ready."""

    code = ErrorCode.EMBEDDED_STACK_ERROR

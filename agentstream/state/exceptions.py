"""State errors."""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError


class StateError(AgentStreamError):
    code = "STATE_ERROR"
    retriable = True


class ContextLostError(StateError):
    """The session's context expired (or was deleted) while a request was still running."""

    code = "CONTEXT_LOST"
    retriable = False


class ConcurrentUpdateError(StateError):
    """A compare-and-set kept losing to other writers."""

    code = "CONCURRENT_UPDATE"
    retriable = True


class SessionBusyError(StateError):
    """Another request of the session is still running (double-text policy decides)."""

    code = "SESSION_BUSY"
    retriable = True


class SessionForbiddenError(StateError):
    """The session exists and belongs to another (tenant, user)."""

    code = "SESSION_FORBIDDEN"
    retriable = False

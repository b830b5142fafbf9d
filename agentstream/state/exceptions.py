"""State errors."""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class StateError(AgentStreamError):
    code = ErrorCode.STATE_ERROR
    retriable = True


class ContextLostError(StateError):
    """The session's context expired (or was deleted) while a request was still running."""

    code = ErrorCode.CONTEXT_LOST
    retriable = False


class ConcurrentUpdateError(StateError):
    """A compare-and-set kept losing to other writers."""

    code = ErrorCode.CONCURRENT_UPDATE
    retriable = True


class SessionBusyError(StateError):
    """Another request of the session is still running (double-text policy decides)."""

    code = ErrorCode.SESSION_BUSY
    retriable = True


class SessionForbiddenError(StateError):
    """The session exists and belongs to another (tenant, user)."""

    code = ErrorCode.SESSION_FORBIDDEN
    retriable = False

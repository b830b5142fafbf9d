"""LLM errors; retry code asks the error (``retriable``) instead of matching types."""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError


class LLMError(AgentStreamError):
    code = "LLM_ERROR"


class LLMTimeoutError(LLMError):
    code = "LLM_TIMEOUT"
    retriable = True


class LLMUnavailableError(LLMError):
    """Server error, overload or connection failure (also used by failure injection)."""

    code = "LLM_UNAVAILABLE"
    retriable = True


class LLMBadRequestError(LLMError):
    code = "LLM_BAD_REQUEST"
    retriable = False

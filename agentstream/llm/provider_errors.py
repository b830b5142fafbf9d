"""HTTP failures of LLM providers → the classified :mod:`agentstream.llm.exceptions` tree.

Both official SDKs (``openai``, ``anthropic``) raise the same shapes: a status error carrying the
HTTP response and the decoded error body, a timeout, a connection error; a body that is not JSON
surfaces as ``json.JSONDecodeError``. :func:`classify_status` decides from the status, the body's
``type``/``code`` and its message (OpenAI-compatible servers — vLLM, llama.cpp, Ollama, LM Studio —
word context-window errors differently, so the message is matched against known phrases).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentstream.llm.exceptions import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMContentPolicyError,
    LLMContextTooLongError,
    LLMError,
    LLMOverloadedError,
    LLMQuotaExceededError,
    LLMRateLimitedError,
    LLMServerError,
    LLMTimeoutError,
    LLMUnavailableError,
)

MAX_PROVIDER_MESSAGE = 500
MAX_RETRY_AFTER_S = 24 * 3600.0

_CONTEXT_CODES = frozenset(
    {
        "context_length_exceeded",
        "exceed_context_size_error",
        "request_too_large",
        "string_above_max_length",
    }
)
_CONTEXT_PHRASES = (
    "context length",
    "context_length",
    "context window",
    "context size",
    "maximum context",
    "prompt is too long",
    "too many tokens",
    "input is too long",
    "reduce the length",
)
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter", "content_policy"})
_POLICY_PHRASES = ("content policy", "content management policy", "safety system")
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
_QUOTA_PHRASES = ("spend limit", "insufficient_quota", "credit balance")


@dataclass(frozen=True, kw_only=True)
class ErrorBody:
    """The useful fields of a provider error body (OpenAI ``{"error": {...}}`` or Anthropic
    ``{"type": "error", "error": {...}}``; either may be the inner dict already)."""

    type: str | None = None
    code: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, body: object) -> ErrorBody:
        if not isinstance(body, Mapping):
            text = body.decode(errors="replace") if isinstance(body, bytes) else body
            return cls(message=text[:MAX_PROVIDER_MESSAGE] if isinstance(text, str) else None)
        inner: Any = body.get("error", body)
        if not isinstance(inner, Mapping):
            return cls(message=str(inner)[:MAX_PROVIDER_MESSAGE])
        code = inner.get("code")
        details = inner.get("details")
        if code is None and isinstance(details, Mapping):
            code = details.get("error_code")
        message = inner.get("message")
        return cls(
            type=str(inner["type"]) if inner.get("type") is not None else None,
            code=str(code) if code is not None else None,
            message=str(message)[:MAX_PROVIDER_MESSAGE] if message is not None else None,
        )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return _bounded(float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return _bounded(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return _bounded(when.timestamp() - (time.time() if now is None else now))


def _bounded(seconds: float) -> float | None:
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _matches(info: ErrorBody, codes: frozenset[str], phrases: tuple[str, ...]) -> bool:
    if (info.code and info.code.lower() in codes) or (info.type and info.type.lower() in codes):
        return True
    message = (info.message or "").lower()
    return any(p in message for p in phrases)


def classify_status(
    provider: str, status: int, headers: Mapping[str, str], body: object
) -> LLMError:
    """The project error for an HTTP error answer of ``provider``."""
    info = ErrorBody.of(body)
    label = " ".join(x for x in (info.type, info.code) if x)
    text = f"{provider}: HTTP {status}" + (f" ({label})" if label else "")
    common: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "provider_message": info.message,
    }
    kind = (info.type or "").lower()
    after = parse_retry_after(headers)
    if status == 529 or kind == "overloaded_error":
        return LLMOverloadedError(text, retry_after_s=after, **common)
    if status == 402 or (status in (403, 429) and _matches(info, _QUOTA_CODES, _QUOTA_PHRASES)):
        return LLMQuotaExceededError(text, **common)
    if status == 429 or kind == "rate_limit_error":
        return LLMRateLimitedError(text, retry_after_s=after, **common)
    if status >= 500:
        return LLMServerError(text, retry_after_s=after, **common)
    return _client_error(status, info)(text, **common)


def _client_error(status: int, info: ErrorBody) -> type[LLMError]:
    """The error class of a 4xx answer that is not about quota or rate limits."""
    if status in (401, 403):
        return LLMAuthenticationError
    if status == 408:
        return LLMTimeoutError
    if status == 413 or (status in (400, 422) and _matches(info, _CONTEXT_CODES, _CONTEXT_PHRASES)):
        return LLMContextTooLongError
    if status in (400, 413, 422) and _matches(info, _POLICY_CODES, _POLICY_PHRASES):
        return LLMContentPolicyError
    if status == 409:
        return LLMUnavailableError
    return LLMBadRequestError

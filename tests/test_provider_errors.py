"""Both providers map HTTP failures to the classified error tree, and the retry policy honours
them, against a local server speaking each wire format (times measured by the server)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from agentstream.llm.anthropic import AnthropicLLM
from agentstream.llm.base import ChatMessage, LLMClient, LLMRequest
from agentstream.llm.exceptions import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMContentPolicyError,
    LLMContextTooLongError,
    LLMError,
    LLMInvalidResponseError,
    LLMOverloadedError,
    LLMQuotaExceededError,
    LLMRateLimitedError,
    LLMServerError,
    LLMTimeoutError,
)
from agentstream.llm.openai_compat import OpenAICompatLLM
from agentstream.llm.provider_errors import parse_retry_after
from agentstream.llm.wrappers import RetryingLLM
from agentstream.resilience.retry import RetryPolicy
from tests.support.llm_servers import (
    FakeLLMServer,
    Reply,
    Wire,
    anthropic_error,
    openai_error,
)

API_KEY = "sk-never-in-logs"
PROMPT = "my bank password is hunter2"
REQUEST = LLMRequest(messages=(ChatMessage(role="user", content=PROMPT),), max_tokens=64)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


@pytest.fixture(params=["openai", "anthropic"])
async def wire(request: pytest.FixtureRequest) -> Wire:
    value: Wire = request.param
    return value


def make_client(server: FakeLLMServer, wire: Wire, timeout_s: float = 5.0) -> LLMClient:
    if wire == "openai":
        return OpenAICompatLLM(
            model="m", base_url=server.base_url, api_key=SecretStr(API_KEY), timeout_s=timeout_s
        )
    return AnthropicLLM(
        model="m", base_url=server.root_url, api_key=SecretStr(API_KEY), timeout_s=timeout_s
    )


@pytest.fixture
async def llm(server: FakeLLMServer, wire: Wire) -> AsyncIterator[LLMClient]:
    client = make_client(server, wire)
    yield client
    await client.aclose()


def error_reply(
    wire: Wire, status: int, type_: str, message: str, code: str | None = None
) -> Reply:
    if wire == "openai":
        return openai_error(status, message, type_=type_, code=code)
    return anthropic_error(status, type_, message)


async def _raises(llm: LLMClient, kind: type[LLMError]) -> LLMError:
    with pytest.raises(kind) as caught:
        await llm.complete(REQUEST)
    return caught.value


async def test_429_classified_with_retry_after(
    server: FakeLLMServer, llm: LLMClient, wire: Wire
) -> None:
    reply = error_reply(wire, 429, "rate_limit_error", "slow down")
    reply.headers["Retry-After"] = "2"
    server.push(reply)
    error = await _raises(llm, LLMRateLimitedError)
    assert error.retriable
    assert error.code == "RATE_LIMITED"
    assert error.retry_after_s == 2.0
    assert error.status_code == 429


async def test_429_with_retry_after_2_is_honoured(
    server: FakeLLMServer, llm: LLMClient, wire: Wire
) -> None:
    """No new call before 2 s, measured by the server's clock."""
    reply = error_reply(wire, 429, "rate_limit_error", "slow down")
    reply.headers["Retry-After"] = "2"
    server.push(reply)
    retrying = RetryingLLM(llm, RetryPolicy(max_attempts=3, base_delay_s=0.01, max_total_s=10))
    result = await retrying.complete(REQUEST)
    assert result.content == "Hello there."
    first, second = server.times()
    assert second - first >= 2.0


@pytest.mark.parametrize(
    ("status", "type_", "message", "code", "kind"),
    [
        (500, "api_error", "internal failure", None, LLMServerError),
        (502, "api_error", "bad gateway", None, LLMServerError),
        (503, "api_error", "unavailable", None, LLMServerError),
        (529, "overloaded_error", "Overloaded", None, LLMOverloadedError),
        (401, "authentication_error", "invalid x-api-key", None, LLMAuthenticationError),
        (403, "permission_error", "no access", None, LLMAuthenticationError),
        (404, "not_found_error", "model: m", None, LLMBadRequestError),
        (
            400,
            "invalid_request_error",
            "This model's maximum context length is 8192 tokens",
            "context_length_exceeded",
            LLMContextTooLongError,
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            None,
            LLMContextTooLongError,
        ),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum size",
            None,
            LLMContextTooLongError,
        ),
        (
            400,
            "invalid_request_error",
            "Your request was rejected as a result of our safety system",
            "content_policy_violation",
            LLMContentPolicyError,
        ),
        (
            429,
            "insufficient_quota",
            "You exceeded your current quota",
            "insufficient_quota",
            LLMQuotaExceededError,
        ),
        (400, "invalid_request_error", "messages: field required", None, LLMBadRequestError),
    ],
)
async def test_status_classification(
    server: FakeLLMServer,
    llm: LLMClient,
    wire: Wire,
    status: int,
    type_: str,
    message: str,
    code: str | None,
    kind: type[LLMError],
) -> None:
    server.push(error_reply(wire, status, type_, message, code))
    error = await _raises(llm, kind)
    assert type(error) is kind
    assert error.status_code == status
    assert error.retriable is (status >= 500)
    assert error.provider_message == message
    assert message not in str(error)  # provider text stays off the message (it may echo input)


async def test_slow_response_times_out(server: FakeLLMServer, wire: Wire) -> None:
    server.push(Reply(delay_s=3.0))
    llm = make_client(server, wire, timeout_s=0.3)
    try:
        error = await _raises(llm, LLMTimeoutError)
    finally:
        await llm.aclose()
    assert error.retriable
    assert error.code == "LLM_TIMEOUT"


async def test_per_call_timeout_of_the_retry_policy(server: FakeLLMServer, llm: LLMClient) -> None:
    """The policy's attempt timeout cuts a slow call even when the SDK timeout is longer; the
    retry then gets a fast answer."""
    server.push(Reply(delay_s=3.0))
    retrying = RetryingLLM(
        llm, RetryPolicy(max_attempts=2, base_delay_s=0.0, attempt_timeout_s=0.3)
    )
    result = await retrying.complete(REQUEST)
    assert result.content == "Hello there."
    assert len(server.arrivals) == 2
    assert server.times()[1] - server.times()[0] < 2.0


async def test_malformed_json(server: FakeLLMServer, llm: LLMClient) -> None:
    server.push(Reply(body='{"id": "x", "choices": [', status=200))
    error = await _raises(llm, LLMInvalidResponseError)
    # one answer's error: not retried as transient, not counted against the provider's breaker
    assert not error.retriable
    assert not error.counts_for_breaker


async def test_connection_reset(server: FakeLLMServer, llm: LLMClient) -> None:
    server.push(Reply(reset=True))
    error = await _raises(llm, LLMConnectionError)
    assert error.retriable
    assert error.code == "LLM_CONNECTION_ERROR"


async def test_connection_refused(wire: Wire) -> None:
    if wire == "openai":
        llm: LLMClient = OpenAICompatLLM(model="m", base_url="http://127.0.0.1:9/v1", timeout_s=2)
    else:
        llm = AnthropicLLM(model="m", base_url="http://127.0.0.1:9", timeout_s=2)
    try:
        await _raises(llm, LLMConnectionError)
    finally:
        await llm.aclose()


async def test_retry_through_500_529_reset_then_success(
    server: FakeLLMServer, llm: LLMClient, wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    server.push(
        error_reply(wire, 500, "api_error", "boom"),
        error_reply(wire, 529, "overloaded_error", "Overloaded"),
        Reply(reset=True),
    )
    retrying = RetryingLLM(llm, RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05))
    with caplog.at_level(logging.DEBUG):
        result = await retrying.complete(REQUEST)
    assert result.content == "Hello there."
    assert len(server.arrivals) == 4
    assert "retrying" in caplog.text
    assert PROMPT not in caplog.text
    assert API_KEY not in caplog.text


async def test_non_retriable_is_not_retried(
    server: FakeLLMServer, llm: LLMClient, wire: Wire
) -> None:
    server.push(error_reply(wire, 400, "invalid_request_error", "bad"))
    retrying = RetryingLLM(llm, RetryPolicy(max_attempts=5, base_delay_s=0.01))
    with pytest.raises(LLMBadRequestError):
        await retrying.complete(REQUEST)
    assert len(server.arrivals) == 1


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert (
        parse_retry_after({"Retry-After": "Sun, 01 Nov 2026 10:00:30 GMT"}, now=1793527200.0)
        == 30.0
    )
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0

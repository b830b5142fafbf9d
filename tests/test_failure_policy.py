"""The failure policy, table-driven: how each kind of error ends an event, by attempt."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agentstream.llm.exceptions import LLMBadRequestError, LLMServerError
from agentstream.processors.signals import DeadLetter, RetryLater
from agentstream.state.exceptions import ContextLostError, SessionBusyError
from agentstream.streams.policy import Action, FailurePolicy, transient

RETRY_IN_PLACE, RETRY_LATER, DEAD_LETTER = (
    Action.RETRY_IN_PLACE,
    Action.RETRY_LATER,
    Action.DEAD_LETTER,
)

# (error, attempt, stage has tiers) -> (action, code, retriable)
TABLE = [
    (DeadLetter("UNDECODABLE", "bad bytes"), 1, True, DEAD_LETTER, "UNDECODABLE", False),
    (RetryLater("LLM_UNAVAILABLE", "down"), 1, True, RETRY_LATER, "LLM_UNAVAILABLE", True),
    (RetryLater("LLM_UNAVAILABLE", "down"), 1, False, DEAD_LETTER, "LLM_UNAVAILABLE", True),
    (RuntimeError("bug"), 1, True, RETRY_IN_PLACE, "INTERNAL_ERROR", False),
    (RuntimeError("bug"), 2, True, RETRY_IN_PLACE, "INTERNAL_ERROR", False),
    (RuntimeError("bug"), 3, True, DEAD_LETTER, "INTERNAL_ERROR", False),
    (RedisConnectionError("gone"), 1, True, RETRY_IN_PLACE, "INTERNAL_ERROR", True),
    (RedisConnectionError("gone"), 3, True, RETRY_LATER, "INTERNAL_ERROR", True),
    (RedisConnectionError("gone"), 3, False, DEAD_LETTER, "INTERNAL_ERROR", True),
    (TimeoutError(), 3, True, RETRY_LATER, "INTERNAL_ERROR", True),
    (LLMServerError("500"), 3, True, RETRY_LATER, "LLM_SERVER_ERROR", True),
    (LLMBadRequestError("400"), 3, True, DEAD_LETTER, "LLM_BAD_REQUEST", False),
    (SessionBusyError("busy"), 3, True, RETRY_LATER, "SESSION_BUSY", True),
    (ContextLostError("gone"), 3, True, DEAD_LETTER, "CONTEXT_LOST", False),
]


@pytest.mark.parametrize(("error", "attempt", "tiers", "action", "code", "retriable"), TABLE)
def test_policy_table(
    error: BaseException,
    attempt: int,
    tiers: bool,
    action: Action,
    code: str,
    retriable: bool,
) -> None:
    decision = FailurePolicy(max_attempts=3, retry_tiers=tiers).decide(error, attempt)
    assert (decision.action, decision.code, decision.retriable) == (action, code, retriable)


def test_retry_in_place_backs_off_with_jitter_within_the_exponential_bound() -> None:
    policy = FailurePolicy(max_attempts=5, backoff_base_s=0.1)
    for attempt in (1, 2, 3, 4):
        delays = {policy.decide(RuntimeError(), attempt).delay_s for _ in range(50)}
        assert all(0 <= d <= 0.1 * 2 ** (attempt - 1) for d in delays)
        assert len(delays) > 1  # jittered, not a fixed sleep


def test_one_attempt_means_no_retry_in_place() -> None:
    decision = FailurePolicy(max_attempts=1, retry_tiers=True).decide(RuntimeError(), 1)
    assert decision.action is DEAD_LETTER


def test_transient_is_the_one_question_handlers_ask() -> None:
    assert transient(LLMServerError("500"))
    assert not transient(LLMBadRequestError("400"))
    assert transient(RetryLater("X", "y"))
    assert not transient(DeadLetter("X", "y"))


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_error_class_has_a_stable_code_from_the_enum() -> None:
    import importlib
    import pkgutil

    import agentstream
    from agentstream.exceptions import AgentStreamError, ErrorCode

    for module in pkgutil.walk_packages(agentstream.__path__, "agentstream."):
        if not module.name.startswith("agentstream.cli"):
            importlib.import_module(module.name)
    classes = _subclasses(AgentStreamError)
    assert len(classes) > 30
    for cls in classes:
        assert cls.code in set(ErrorCode), (
            f"{cls.__qualname__}.code {cls.code!r} is not an ErrorCode"
        )

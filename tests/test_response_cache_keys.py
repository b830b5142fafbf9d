"""Response-cache keys and the cacheability rule (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.admission.cache import (
    ResponseCache,
    answer_ttl_s,
    bypassed,
    is_cacheable,
    is_single_turn,
    model_route,
    normalize_message,
)
from agentstream.admission.keys import AdmissionKeys

NOW = 1_800_000_000.0


def cache() -> ResponseCache:
    return ResponseCache(None, AdmissionKeys("p"), ttl_s=300, bucket_s=3600)  # type: ignore[arg-type]


def key(**changes: Any) -> str:
    fields: dict[str, Any] = {
        "tenant_id": "acme",
        "user_id": "u",
        "message": "What is 2 + 2?",
        "allowed_tools": ["b", "a"],
        "model": "local",
        "now_s": NOW,
    }
    fields.update(changes)
    return cache().key(**fields)


def test_key_is_tenant_scoped_and_stable() -> None:
    assert key().startswith("p:adm:{acme}:cache:")
    assert key() == key(message="  What   is 2 + 2? ", allowed_tools=["a", "b", "a"])
    assert key() == key(now_s=NOW + 1)  # same hour bucket


@pytest.mark.parametrize(
    "change",
    [
        {"tenant_id": "globex"},
        {"user_id": "v"},
        {"message": "what is 2 + 2?"},  # case is kept
        {"allowed_tools": ["a"]},
        {"model": "gpt"},
        {"now_s": NOW + 3600},  # the next time bucket
    ],
)
def test_every_part_of_the_key_matters(change: dict[str, Any]) -> None:
    assert key(**change) != key()


def test_normalize_message() -> None:
    assert normalize_message(" a\u00a0 b\n\tc ") == "a b c"
    assert normalize_message("\uff21") == "A"  # NFKC: full-width A


def test_bypass_and_model_route() -> None:
    assert bypassed({"cache": "bypass"})
    assert bypassed({"cache": " BYPASS "})
    assert not bypassed({"cache": "yes"})
    assert not bypassed({})
    assert model_route({"model": "gpt-x"}, "local") == "gpt-x"
    assert model_route({}, "local") == "local"


def test_single_turn() -> None:
    assert is_single_turn([{"request_id": "r"}, {"request_id": "r"}], "r")
    assert not is_single_turn([{"request_id": "old"}, {"request_id": "r"}], "r")


# Seconds each tool's results may be reused: a cacheable read-only tool, a read-only tool
# without a cache TTL (calculator by default, current_time always), a side-effecting one.
TOOL_TTLS = {"lookup": 60, "prices": 30, "calculator": 0, "shop.order": 0}


def _cacheable(**changes: Any) -> bool:
    fields: dict[str, Any] = {
        "state": "COMPLETED",
        "confidence": 1.0,
        "min_confidence": 0.8,
        "single_turn": True,
        "tool_calls": [{"name": "lookup", "is_error": False}],
        "tool_ttl_s": lambda name: TOOL_TTLS.get(name, 0),
        "degraded": False,
    }
    fields.update(changes)
    return is_cacheable(**fields)


def test_cacheable_rule() -> None:
    assert _cacheable()
    assert _cacheable(confidence=0.8)
    assert not _cacheable(confidence=0.79)
    assert not _cacheable(state="ERROR")
    assert not _cacheable(single_turn=False)
    assert not _cacheable(degraded=True)
    assert _cacheable(tool_calls=[])
    assert not _cacheable(tool_calls=[{"name": "shop.order", "is_error": False}])
    assert not _cacheable(tool_calls=[{"name": "lookup", "is_error": True}])
    # read-only is not enough: a read-only tool without a cache TTL makes the answer uncacheable
    assert not _cacheable(tool_calls=[{"name": "calculator", "is_error": False}])
    both = [{"name": "lookup", "is_error": False}, {"name": "calculator", "is_error": False}]
    assert not _cacheable(tool_calls=both)
    assert not _cacheable(tool_calls=[{"name": "unknown", "is_error": False}])


def test_an_answer_lives_no_longer_than_the_tool_results_it_used() -> None:
    def ttl(names: list[str]) -> int:
        return answer_ttl_s(300, [{"name": n} for n in names], lambda n: TOOL_TTLS.get(n, 0))

    assert ttl([]) == 300
    assert ttl(["lookup"]) == 60
    assert ttl(["lookup", "prices"]) == 30
    assert answer_ttl_s(10, [{"name": "lookup"}], lambda n: TOOL_TTLS.get(n, 0)) == 10

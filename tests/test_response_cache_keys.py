"""Response-cache keys and the cacheability rule (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.admission.cache import (
    ResponseCache,
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


def _cacheable(**changes: Any) -> bool:
    fields: dict[str, Any] = {
        "state": "COMPLETED",
        "confidence": 1.0,
        "min_confidence": 0.8,
        "single_turn": True,
        "tool_calls": [{"name": "calculator", "is_error": False}],
        "read_only": lambda name: name == "calculator",
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
    assert not _cacheable(tool_calls=[{"name": "shop.order", "is_error": False}])
    assert not _cacheable(tool_calls=[{"name": "calculator", "is_error": True}])

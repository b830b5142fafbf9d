"""Response cache: a finished single-turn answer, served again for the same question.

The key hashes the user, the normalized message, the sorted allowed tools, the model route and a
time bucket (default one hour), under the tenant's key space, so an answer is never served to
another tenant (or user), nor for another tool set or model, nor across buckets. Entries live
``cache_ttl_s`` (default 5 min).

Only answers that are safe to repeat are stored (:func:`is_cacheable`): COMPLETED, single-turn
(the session had no earlier request), every tool call of a tool whose results are cacheable
(read-only *and* configured with a cache TTL: the rule of the tool result cache, see
docs/tools.md) and none failed, not degraded, and confidence at least ``cache_min_confidence``
(0.8). An answer built on tool results lives no longer than the shortest of their TTLs
(:func:`answer_ttl_s`). Lookups are made only for requests that are
themselves single-turn, since a cached answer knows nothing of an earlier conversation.
A request with metadata ``cache=bypass`` neither reads nor writes the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from agentstream.admission.keys import AdmissionKeys
from agentstream.state.redis import RedisClient

CACHE_METADATA_KEY = "cache"
BYPASS = "bypass"
MODEL_METADATA_KEY = "model"


@dataclass(frozen=True, kw_only=True)
class CachedAnswer:
    tenant_id: str
    user_id: str
    content: str
    confidence: float
    model: str
    source_response_id: str
    stored_at: float

    def metadata(self, now_s: float | None = None) -> dict[str, str]:
        """Metadata of a response served from this entry."""
        age = max(0.0, (time.time() if now_s is None else now_s) - self.stored_at)
        return {
            "cached": "true",
            "model": self.model,
            "cached_from": self.source_response_id,
            "cache_age_s": f"{age:.3f}",
            "cached_at": datetime.fromtimestamp(self.stored_at, UTC).isoformat(),
        }


def bypassed(metadata: Mapping[str, str]) -> bool:
    return metadata.get(CACHE_METADATA_KEY, "").strip().lower() == BYPASS


def model_route(metadata: Mapping[str, str], default_model: str) -> str:
    return metadata.get(MODEL_METADATA_KEY) or default_model


def normalize_message(message: str) -> str:
    """NFKC, whitespace runs collapsed, ends stripped. Case is kept: it can change the meaning."""
    return " ".join(unicodedata.normalize("NFKC", message).split())


def is_single_turn(history: Iterable[Mapping[str, Any]], request_id: str) -> bool:
    """True when every history entry belongs to ``request_id`` (no earlier request)."""
    return all(e.get("request_id") == request_id for e in history)


def is_cacheable(
    *,
    state: str,
    confidence: float,
    min_confidence: float,
    single_turn: bool,
    tool_calls: Iterable[Mapping[str, Any]],
    tool_ttl_s: Callable[[str], int],
    degraded: bool = False,
) -> bool:
    """``tool_ttl_s``: seconds a tool's results may be reused (0: not cacheable)."""
    if state != "COMPLETED" or not single_turn or degraded or confidence < min_confidence:
        return False
    return all(tool_ttl_s(c["name"]) > 0 and not c.get("is_error") for c in tool_calls)


def answer_ttl_s(
    ttl_s: int, tool_calls: Iterable[Mapping[str, Any]], tool_ttl_s: Callable[[str], int]
) -> int:
    """The answer's cache TTL: ``ttl_s``, or less when a tool it used may reuse its results for
    less (the answer would otherwise outlive them)."""
    return min([ttl_s, *(tool_ttl_s(c["name"]) for c in tool_calls)])


class ResponseCache:
    def __init__(
        self, redis: RedisClient, keys: AdmissionKeys, *, ttl_s: int, bucket_s: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_s = ttl_s
        self.bucket_s = bucket_s

    def key(
        self,
        *,
        tenant_id: str,
        user_id: str,
        message: str,
        allowed_tools: Iterable[str],
        model: str,
        now_s: float | None = None,
    ) -> str:
        bucket = int((time.time() if now_s is None else now_s) // self.bucket_s)
        material = json.dumps(
            [user_id, normalize_message(message), sorted(set(allowed_tools)), model, bucket],
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(material.encode()).hexdigest()
        return self._keys.cache(tenant_id, digest)

    async def get(self, key: str, *, tenant_id: str, user_id: str) -> CachedAnswer | None:
        raw = await self._redis.get(key)
        if raw is None:
            return None
        try:
            answer = CachedAnswer(**json.loads(raw))
        except (ValueError, TypeError):
            return None  # an entry of another version: treat as a miss
        # The key already scopes tenant and user; checking again costs nothing.
        if answer.tenant_id != tenant_id or answer.user_id != user_id:
            return None
        return answer

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: int | None = None) -> None:
        """Store ``answer`` for ``ttl_s`` seconds (None: the configured ``cache_ttl_s``)."""
        value = json.dumps(asdict(answer), separators=(",", ":"))
        await self._redis.set(key, value, ex=ttl_s or self.ttl_s)

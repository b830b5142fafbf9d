"""Tool policies: from MCP tool annotations, with operator overrides on top.

MCP annotations are hints (the spec says not to trust them from untrusted servers), read as:

- ``readOnlyHint: true``              -> read-only (and idempotent); anything else side-effecting
- ``idempotentHint: true``            -> idempotent
- ``destructiveHint`` (default true)  -> destructive, for side-effecting tools only
- ``_meta["io.agentstream/accepts-idempotency-key"]: true`` -> the tool honours the key sent in
  the call's ``_meta["io.agentstream/idempotency-key"]``
- ``_meta["io.agentstream/cache-ttl-s"]: N`` (a whole number >= 0) -> a read-only tool's results
  may be cached N seconds (MCP has no caching annotation; ``_meta`` is where a server may say
  so). Without it nothing is cached unless the operator configures a TTL.

A server configured with ``"trust_annotations": false`` gets the safe default for every tool
(side-effecting, not idempotent) unless an override says otherwise.

Overrides (``tools.overrides``) match a tool name exactly or by glob; per field, an exact name
beats any glob and a longer glob beats a shorter one. Server-level settings (``timeout_s``,
``cache_ttl_s`` in the server entry) sit below every override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from fnmatch import fnmatchcase
from typing import Any

from agentstream.tools.base import ToolPolicy
from agentstream.tools.settings import ToolOverride

ACCEPTS_KEY_META = "io.agentstream/accepts-idempotency-key"
CACHE_TTL_META = "io.agentstream/cache-ttl-s"
_WILDCARDS = frozenset("*?[")


def policy_from_annotations(
    annotations: Any, meta: Mapping[str, Any] | None, *, trusted: bool = True
) -> ToolPolicy:
    """The policy an MCP tool declares (``annotations`` is an ``mcp.types.ToolAnnotations``)."""
    if not trusted:
        return ToolPolicy()
    read_only = getattr(annotations, "read_only_hint", None) is True
    idempotent = read_only or getattr(annotations, "idempotent_hint", None) is True
    destructive = not read_only and getattr(annotations, "destructive_hint", None) is not False
    accepts_key = bool(meta and meta.get(ACCEPTS_KEY_META) is True)
    return ToolPolicy(
        read_only=read_only,
        idempotent=idempotent,
        accepts_idempotency_key=accepts_key,
        destructive=destructive,
        cache_ttl_s=_meta_ttl(meta) if read_only else None,
    )


def _meta_ttl(meta: Mapping[str, Any] | None) -> int | None:
    value = meta.get(CACHE_TTL_META) if meta else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None  # absent or unusable: the operator's setting decides
    return value


def _specificity(pattern: str) -> tuple[int, int]:
    """Sort key: exact names first, then globs with more literal characters."""
    is_glob = any(ch in _WILDCARDS for ch in pattern)
    literal = sum(1 for ch in pattern if ch not in _WILDCARDS)
    return (1 if is_glob else 0, -literal)


class ToolOverrides:
    """Resolves the effective override for a tool name (field by field, most specific first)."""

    def __init__(self, overrides: Mapping[str, ToolOverride] | None = None) -> None:
        items = sorted((overrides or {}).items(), key=lambda item: _specificity(item[0]))
        self._ordered: list[tuple[str, ToolOverride]] = items

    def for_tool(self, name: str) -> ToolOverride:
        merged: dict[str, Any] = {}
        for pattern, override in self._ordered:
            if pattern != name and not fnmatchcase(name, pattern):
                continue
            for field, value in override.model_dump(exclude_none=True).items():
                merged.setdefault(field, value)
        return ToolOverride(**merged)

    def apply(self, name: str, base: ToolPolicy) -> ToolPolicy:
        """``base`` with the overrides for ``name`` applied."""
        o = self.for_tool(name)
        policy = replace(
            base,
            read_only=base.read_only if o.read_only is None else o.read_only,
            idempotent=base.idempotent if o.idempotent is None else o.idempotent,
            accepts_idempotency_key=(
                base.accepts_idempotency_key
                if o.accepts_idempotency_key is None
                else o.accepts_idempotency_key
            ),
            cache_ttl_s=base.cache_ttl_s if o.cache_ttl_s is None else o.cache_ttl_s,
        )
        if policy.read_only and not policy.idempotent:
            policy = replace(policy, idempotent=True)
        if policy.read_only:
            policy = replace(policy, destructive=False)
        return policy

    def timeout_for(self, name: str) -> float | None:
        return self.for_tool(name).timeout_s

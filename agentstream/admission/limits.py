"""Per-tenant limits (settings overrides merged onto the defaults) and the sliding windows
they define for one user."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.admission.keys import COSTS_SUFFIX, AdmissionKeys
from agentstream.config import AdmissionLimits, AdmissionSettings

#: Names of the windows of an agent's own limits start with this.
AGENT_WINDOW_PREFIX = "agent:"


@dataclass(frozen=True, kw_only=True)
class Window:
    """One sliding window: ``limit`` units per ``window_ms`` on the key pair ``key`` (+ costs)."""

    name: str
    key: str
    limit: int
    window_ms: int

    @property
    def costs_key(self) -> str:
        return self.key + COSTS_SUFFIX


class TenantLimits:
    """Resolves a tenant's :class:`AdmissionLimits` once and keeps it."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self._settings = settings
        self._resolved: dict[str, AdmissionLimits] = {}

    def for_tenant(self, tenant_id: str) -> AdmissionLimits:
        limits = self._resolved.get(tenant_id)
        if limits is None:
            limits = merged_limits(self._settings, tenant_id)
            self._resolved[tenant_id] = limits
        return limits


def merged_limits(settings: AdmissionSettings, tenant_id: str) -> AdmissionLimits:
    """The defaults with the tenant's override applied field by field (set fields only)."""
    override = settings.tenants.get(tenant_id)
    if override is None:
        return settings.defaults
    return settings.defaults.model_copy(update=override.model_dump(exclude_unset=True))


def request_windows(
    keys: AdmissionKeys, limits: AdmissionLimits, tenant_id: str, user_id: str
) -> list[Window]:
    window_ms = _ms(limits.window_s)
    out: list[Window] = []
    if limits.user_requests is not None:
        key = keys.user_requests(tenant_id, user_id)
        out.append(
            Window(name="user_requests", key=key, limit=limits.user_requests, window_ms=window_ms)
        )
    if limits.tenant_requests is not None:
        key = keys.tenant_requests(tenant_id)
        out.append(
            Window(
                name="tenant_requests", key=key, limit=limits.tenant_requests, window_ms=window_ms
            )
        )
    return out


def token_windows(
    keys: AdmissionKeys, limits: AdmissionLimits, tenant_id: str, user_id: str
) -> list[Window]:
    window_ms = _ms(limits.window_s)
    out: list[Window] = []
    if limits.user_tokens is not None:
        key = keys.user_tokens(tenant_id, user_id)
        out.append(
            Window(name="user_tokens", key=key, limit=limits.user_tokens, window_ms=window_ms)
        )
    if limits.tenant_tokens is not None:
        key = keys.tenant_tokens(tenant_id)
        out.append(
            Window(name="tenant_tokens", key=key, limit=limits.tenant_tokens, window_ms=window_ms)
        )
    return out


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def agent_windows(
    keys: AdmissionKeys,
    limits: AdmissionLimits | None,
    agent: str,
    tenant_id: str,
    user_id: str,
    *,
    tokens: bool,
) -> list[Window]:
    """The request (or token) windows of one agent's own ``limits`` (None: no limits)."""
    if limits is None:
        return []
    of_agent = keys.of_agent(agent)
    build = token_windows if tokens else request_windows
    return [
        Window(
            name=f"{AGENT_WINDOW_PREFIX}{w.name}", key=w.key, limit=w.limit, window_ms=w.window_ms
        )
        for w in build(of_agent, limits, tenant_id, user_id)
    ]

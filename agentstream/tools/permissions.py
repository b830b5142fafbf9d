"""Who may call which tool: allow/deny globs for everyone, per tenant and per user.

A call is permitted only when each configured level permits it (a level permits a name that
matches one of its ``allow`` globs and none of its ``deny`` globs) and, when the request names
its ``allowed_tools``, the name is one of them. Levels: the global rule, the tenant's rule if the
tenant is configured, the user's rule if that tenant configures the user. Deny always wins and
nothing a request carries can add a tool: the request list only narrows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from agentstream.tools.base import CallContext
from agentstream.tools.settings import ToolAccessRule, ToolSettings


@dataclass(frozen=True)
class _Rule:
    allow: tuple[str, ...]
    deny: tuple[str, ...]

    @classmethod
    def of(cls, rule: ToolAccessRule) -> _Rule:
        return cls(allow=tuple(rule.allow), deny=tuple(rule.deny))

    def permits(self, name: str) -> bool:
        return _matches(name, self.allow) and not _matches(name, self.deny)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(p == name or fnmatchcase(name, p) for p in patterns)


class ToolPermissions:
    """Evaluates the configured access rules (see the module docstring)."""

    def __init__(
        self,
        everyone: ToolAccessRule | None = None,
        tenants: dict[str, tuple[ToolAccessRule, dict[str, ToolAccessRule]]] | None = None,
    ) -> None:
        self._everyone = _Rule.of(everyone or ToolAccessRule())
        self._tenants = {
            tenant: (_Rule.of(rule), {user: _Rule.of(u) for user, u in users.items()})
            for tenant, (rule, users) in (tenants or {}).items()
        }

    @classmethod
    def from_settings(cls, settings: ToolSettings) -> ToolPermissions:
        return cls(
            ToolAccessRule(allow=settings.allow, deny=settings.deny),
            {
                tenant: (ToolAccessRule(allow=t.allow, deny=t.deny), dict(t.users))
                for tenant, t in settings.tenants.items()
            },
        )

    def permits(self, name: str, call: CallContext | None) -> bool:
        """Whether ``name`` may run for this caller (``call=None``: the global rule only)."""
        if not self._everyone.permits(name):
            return False
        if call is None:
            return True
        if call.request_allowed and name not in call.request_allowed:
            return False
        tenant = self._tenants.get(call.tenant_id)
        if tenant is None:
            return True
        rule, users = tenant
        if not rule.permits(name):
            return False
        user = users.get(call.user_id)
        return user is None or user.permits(name)

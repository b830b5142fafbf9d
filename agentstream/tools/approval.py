"""Which tool calls wait for a person's approval: ``tools.approvals`` rules.

Each rule names tool globs and, optionally, tenants and agents (ids or globs; empty = every
one). Of the rules that match a call, the last one decides (``required`` or ``none``), so a
broad rule can be narrowed by a later exception. No matching rule: no approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from agentstream.tools.settings import ApprovalRule

#: The agent name rules match when a request names no agent.
DEFAULT_AGENT = "default"


def _matches(patterns: Sequence[str], value: str) -> bool:
    return not patterns or any(fnmatchcase(value, p) for p in patterns)


def approval_required(
    rules: Sequence[ApprovalRule], *, tool: str, tenant_id: str, agent: str | None
) -> bool:
    """True when the last rule matching (tool, tenant, agent) says ``required``."""
    decided = False
    name = agent or DEFAULT_AGENT
    for rule in rules:
        if (
            any(fnmatchcase(tool, p) for p in rule.tools)
            and _matches(rule.tenants, tenant_id)
            and _matches(rule.agents, name)
        ):
            decided = rule.approval == "required"
    return decided

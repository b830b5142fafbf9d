"""Redis key layout of admission state. Every key is tenant-scoped under the state key prefix.

The tenant sits in a hash tag (``{tenant}``) so all of one tenant's admission keys share a Redis
Cluster slot and one Lua script may touch the user's and the tenant's keys together. Every id is
percent-encoded (:func:`agentstream.state.keys.key_part`): ``:`` and braces in ids can neither
make two tenants' or users' keys collide nor move the hash tag.

``{prefix}:adm:{tenant}:rq:u:{user}``      requests of one user in the sliding window (zset)
``{prefix}:adm:{tenant}:rq:u:{user}:c``    their costs and running total (hash)
``{prefix}:adm:{tenant}:rq:t`` (+ ``:c``)  requests of the whole tenant
``{prefix}:adm:{tenant}:tk:u:{user}`` (+ ``:c``)  LLM tokens of one user
``{prefix}:adm:{tenant}:tk:t`` (+ ``:c``)  LLM tokens of the whole tenant
``{prefix}:adm:{tenant}:day:{YYYYMMDD}``  daily usage: tokens, cost_micro (hash)
``{prefix}:adm:{tenant}:cache:{sha256}``   one cached response (string, JSON)
``{prefix}:adm:{tenant}:ag:{agent}:rq:u:{user}`` ... the same windows of one agent (its limits)
``{prefix}:adm:{tenant}:ag:{agent}:day:{YYYYMMDD}``  that agent's daily usage, when it has a budget
"""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.state.keys import check_prefix, hash_tag, key_part, key_part_decode

COSTS_SUFFIX = ":c"


@dataclass(frozen=True)
class AdmissionKeys:
    prefix: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def tenant_base(self, tenant_id: str) -> str:
        return f"{self.prefix}:adm:{hash_tag(tenant_id)}"

    def user_requests(self, tenant_id: str, user_id: str) -> str:
        return f"{self.tenant_base(tenant_id)}:rq:u:{key_part(user_id)}"

    def tenant_requests(self, tenant_id: str) -> str:
        return f"{self.tenant_base(tenant_id)}:rq:t"

    def user_tokens(self, tenant_id: str, user_id: str) -> str:
        return f"{self.tenant_base(tenant_id)}:tk:u:{key_part(user_id)}"

    def tenant_tokens(self, tenant_id: str) -> str:
        return f"{self.tenant_base(tenant_id)}:tk:t"

    def day(self, tenant_id: str, day: str) -> str:
        return f"{self.tenant_base(tenant_id)}:day:{day}"

    def day_pattern(self, day: str) -> str:
        """SCAN pattern matching every tenant's usage hash of ``day``."""
        return f"{_glob_escape(self.prefix)}:adm:{{*}}:day:{day}"

    def tenant_of_day_key(self, key: str) -> str | None:
        head = f"{self.prefix}:adm:{{"
        if not key.startswith(head):
            return None
        end = key.find("}", len(head))
        return key_part_decode(key[len(head) : end]) if end > 0 else None

    def of_agent(self, agent: str) -> AgentKeys:
        """The window keys of one agent's own limits (same tenant hash tag)."""
        return AgentKeys(self.prefix, agent)

    def cache(self, tenant_id: str, digest: str) -> str:
        return f"{self.tenant_base(tenant_id)}:cache:{digest}"


@dataclass(frozen=True)
class AgentKeys(AdmissionKeys):
    """:class:`AdmissionKeys` whose windows count one agent's requests and tokens."""

    agent: str

    def tenant_base(self, tenant_id: str) -> str:
        return f"{super().tenant_base(tenant_id)}:ag:{key_part(self.agent)}"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)

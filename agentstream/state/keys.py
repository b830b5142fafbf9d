"""Redis key layout: the one place that turns ids into keys.

Ids come from clients and may contain ``:``, ``{``, ``}``, ``/`` or any unicode. Every id
component is therefore percent-encoded (:func:`key_part`: UTF-8, everything but letters, digits
and ``-._~`` escaped), so a component never contains the ``:`` that separates components nor a
brace that would change a Redis Cluster hash tag. Distinct (tenant, session) pairs can never map
to the same key: ``iso:a`` + ``X`` is ``iso%3Aa:X``, ``iso`` + ``a:X`` is ``iso:a%3AX``.

Keys a Lua script touches together share a hash tag (``{...}``) so they live in one Redis
Cluster slot. The session's context and its step-journal entries share ``{tenant:session}``:
one tenant's sessions spread over many slots. Request dedupe markers are tagged by
``{tenant:request}``.

``{prefix}:ctx:{T:S}``          AgentContext of session S of tenant T (hash: v, data, a)
``{prefix}:step:{T:S}:STEP``    step-journal entry of a step of that session
``{prefix}:req:{T:R}``          request dedupe marker (first sighting's position, session)
``{prefix}:cancel:{T:R}:C``     what cancel request C of request R found (state/cancels.py)
``{prefix}:park:{T:S}:PARK``    a parked tool batch of that session (state/parking.py)
``{prefix}:wait:{T:S}:ID``      what a parked batch waits for (an approval): its park, its decision
``{prefix}:parked``             every parked batch by due time (one sorted set)

Admission, cache and breaker keys are built in their own modules from :func:`key_part` and
:func:`hash_tag` (``admission/keys.py``, ``tools/cache.py``, ``resilience/breaker.py``).

The layout changed in 0.2 (ids were joined raw before, which let tenants collide): keys written
by an earlier version are not read; they expire by their TTLs. See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote


def key_part(value: str) -> str:
    """One id as a key component: percent-encoded, so never ``:``, ``{``, ``}`` or ``*``."""
    return quote(value, safe="")


def key_part_decode(part: str) -> str:
    """The id a :func:`key_part` came from."""
    return unquote(part)


def hash_tag(*ids: str) -> str:
    """A Redis Cluster hash tag from ids: ``{a:b}``, each id encoded with :func:`key_part`."""
    return "{" + ":".join(key_part(i) for i in ids) + "}"


def check_prefix(prefix: str) -> str:
    """The configured key prefix must not hold braces (they would move the hash tag)."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError("key prefix must be non-empty and must not contain '{' or '}'")
    return prefix


@dataclass(frozen=True)
class Keys:
    prefix: str

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def context(self, tenant_id: str, session_id: str) -> str:
        return f"{self.prefix}:ctx:{hash_tag(tenant_id, session_id)}"

    def step(self, tenant_id: str, session_id: str, step_id: str) -> str:
        return f"{self.prefix}:step:{hash_tag(tenant_id, session_id)}:{key_part(step_id)}"

    def park(self, tenant_id: str, session_id: str, park_id: str) -> str:
        return f"{self.prefix}:park:{hash_tag(tenant_id, session_id)}:{key_part(park_id)}"

    def wait(self, tenant_id: str, session_id: str, wait_id: str) -> str:
        return f"{self.prefix}:wait:{hash_tag(tenant_id, session_id)}:{key_part(wait_id)}"

    def parked(self) -> str:
        return f"{self.prefix}:parked"

    def request(self, tenant_id: str, request_id: str) -> str:
        return f"{self.prefix}:req:{hash_tag(tenant_id, request_id)}"

    def cancel(self, tenant_id: str, request_id: str, cancel_id: str) -> str:
        tag = hash_tag(tenant_id, request_id)
        return f"{self.prefix}:cancel:{tag}:{key_part(cancel_id)}"

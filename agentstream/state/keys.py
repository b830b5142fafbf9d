"""Redis key layout. Every key is tenant-scoped where it holds tenant data.

``{prefix}:ctx:{tenant}:{session}``   AgentContext (hash: v = version, data = JSON)
``{prefix}:req:{tenant}:{request_id}`` request dedupe marker (first sighting's position)
``{prefix}:step:{tenant}:{step_id}``   step journal entry (status, owner, result)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def context(self, tenant_id: str, session_id: str) -> str:
        return f"{self.prefix}:ctx:{tenant_id}:{session_id}"

    def step(self, tenant_id: str, step_id: str) -> str:
        return f"{self.prefix}:step:{tenant_id}:{step_id}"

    def request(self, tenant_id: str, request_id: str) -> str:
        return f"{self.prefix}:req:{tenant_id}:{request_id}"

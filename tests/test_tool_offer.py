"""The tools offered to the model follow the caller's permissions: a denied tool is not offered
(and, if the model names it anyway, the call is refused before it reaches the tool)."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.tools.base import CallContext
from agentstream.tools.factory import build_tools


def _call(tenant: str, allowed: tuple[str, ...] = ()) -> CallContext:
    return CallContext(
        tenant_id=tenant, user_id="u", request_id="r", session_id="s", request_allowed=allowed
    )


async def test_offer_follows_tenant_rules_and_request_allow_list() -> None:
    settings = Settings(tools={"tenants": {"acme": {"deny": ["calculator"]}}})
    tools = build_tools(settings)
    assert [s.name for s in tools.specs(call=_call("acme"))] == ["current_time"]
    assert [s.name for s in tools.specs(call=_call("other"))] == ["calculator", "current_time"]
    assert [s.name for s in tools.specs(call=_call("other", ("calculator",)))] == ["calculator"]
    denied = await tools.execute(
        "calculator", {"expression": "1+1"}, timeout_s=1, call=_call("acme")
    )
    assert denied.error_code == "TOOL_ACCESS_DENIED"

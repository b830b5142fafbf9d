"""Tool policies, overrides, permissions and ``mcpServers`` config (no backends needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ToolAnnotations

from agentstream.config import Settings
from agentstream.exceptions import ConfigError
from agentstream.llm.base import ToolSpec
from agentstream.tools.base import CallContext, ToolExecutor, ToolPolicy
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.mcp.config import expand_env, load_mcp_servers, parse_mcp_servers
from agentstream.tools.permissions import ToolPermissions
from agentstream.tools.policy import ToolOverrides, policy_from_annotations
from agentstream.tools.registry import ToolRegistry, default_registry
from agentstream.tools.settings import ToolOverride, ToolSettings


def ctx(
    tenant: str = "acme", user: str = "ann", allowed: tuple[str, ...] = (), key: str = ""
) -> CallContext:
    return CallContext(
        tenant_id=tenant,
        user_id=user,
        request_id="r1",
        session_id="s1",
        request_allowed=allowed,
        idempotency_key=key,
    )


# --- policies from annotations ------------------------------------------------------------------


def test_read_only_hint_makes_a_read_only_idempotent_tool() -> None:
    p = policy_from_annotations(ToolAnnotations(read_only_hint=True), None)
    assert p == ToolPolicy(read_only=True, idempotent=True, destructive=False)


def test_missing_annotations_mean_side_effecting_and_destructive() -> None:
    p = policy_from_annotations(None, None)
    assert p == ToolPolicy(read_only=False, idempotent=False, destructive=True)


def test_idempotent_and_non_destructive_hints() -> None:
    a = ToolAnnotations(read_only_hint=False, idempotent_hint=True, destructive_hint=False)
    p = policy_from_annotations(a, {"io.agentstream/accepts-idempotency-key": True})
    assert p == ToolPolicy(idempotent=True, accepts_idempotency_key=True, destructive=False)


def test_untrusted_server_annotations_are_ignored() -> None:
    p = policy_from_annotations(ToolAnnotations(read_only_hint=True), None, trusted=False)
    assert p == ToolPolicy()


def test_overrides_exact_name_beats_longer_glob_beats_shorter_glob() -> None:
    overrides = ToolOverrides(
        {
            "*": ToolOverride(timeout_s=1, cache_ttl_s=10),
            "srv.*": ToolOverride(timeout_s=2, read_only=True),
            "srv.exact": ToolOverride(timeout_s=3),
        }
    )
    assert overrides.timeout_for("srv.exact") == 3
    assert overrides.timeout_for("srv.other") == 2
    assert overrides.timeout_for("calculator") == 1
    merged = overrides.for_tool("srv.exact")  # field by field: the exact one sets only timeout
    assert (merged.timeout_s, merged.read_only, merged.cache_ttl_s) == (3, True, 10)
    applied = overrides.apply("srv.exact", ToolPolicy())
    assert applied.read_only
    assert applied.idempotent
    assert not applied.destructive
    assert applied.cache_ttl_s == 10


def test_registry_policy_timeout_and_read_only_with_overrides() -> None:
    registry = ToolRegistry(
        default_registry_tools(),
        overrides=ToolOverrides(
            {"calculator": ToolOverride(read_only=False, timeout_s=7, cache_ttl_s=5)}
        ),
    )
    assert isinstance(registry, ToolExecutor)
    assert not registry.read_only("calculator")
    assert registry.policy("calculator").cache_ttl_s == 5
    assert registry.timeout_for("calculator", 30) == 7
    assert registry.timeout_for("current_time", 30) == 30
    assert registry.policy("current_time").cache_ttl_s == 0  # the time changes: never cached
    assert registry.policy("nope") == ToolPolicy()
    assert not registry.read_only("nope")


def default_registry_tools() -> list[Any]:
    registry = default_registry()
    return [registry.get(name) for name in registry.names()]


class KeyedEcho:
    """A side-effecting tool that records the idempotency key it was handed."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name="keyed", description="", input_schema={"type": "object"})

    @property
    def read_only(self) -> bool:
        return False

    async def call(self, arguments: dict[str, Any]) -> str:
        return await self.call_with_key(arguments, None)

    async def call_with_key(self, arguments: dict[str, Any], idempotency_key: str | None) -> str:
        self.keys.append(idempotency_key)
        return "ok"


async def test_idempotency_key_is_passed_only_when_the_policy_accepts_it() -> None:
    tool = KeyedEcho()
    registry = ToolRegistry()
    registry.register(tool, policy=ToolPolicy(accepts_idempotency_key=True))
    await registry.execute("keyed", {}, timeout_s=1, call=ctx(key="r1:t0:c0"))
    registry.register(tool, replace=True)  # default policy: no key
    await registry.execute("keyed", {}, timeout_s=1, call=ctx(key="r1:t0:c1"))
    assert tool.keys == ["r1:t0:c0", None]


# --- permissions ----------------------------------------------------------------------------------


def permissions(**tools: Any) -> ToolPermissions:
    return ToolPermissions.from_settings(ToolSettings(**tools))


def test_default_permits_everything() -> None:
    p = permissions()
    assert p.permits("anything.at_all", ctx())
    assert p.permits("calculator", None)


def test_request_allowed_tools_narrow_and_never_widen() -> None:
    p = permissions(deny=["secret.*"])
    assert p.permits("calculator", ctx(allowed=("calculator",)))
    assert not p.permits("current_time", ctx(allowed=("calculator",)))
    assert not p.permits("secret.read", ctx(allowed=("secret.read",)))


def test_tenant_and_user_rules_intersect_and_deny_wins() -> None:
    p = permissions(
        allow=["*"],
        deny=["danger.*"],
        tenants={
            "acme": {
                "allow": ["time.*", "counter.*", "calculator"],
                "deny": ["counter.bump"],
                "users": {"bob": {"allow": ["time.*"]}, "eve": {"deny": ["*"]}},
            }
        },
    )
    assert p.permits("time.get_current_time", ctx())
    assert p.permits("counter.add", ctx())
    assert not p.permits("counter.bump", ctx())  # tenant deny
    assert not p.permits("current_time", ctx())  # not in the tenant's allow list
    assert not p.permits("danger.x", ctx(tenant="other"))  # global deny for everyone
    assert p.permits("current_time", ctx(tenant="other"))  # unconfigured tenant: global rule
    assert p.permits("time.convert_time", ctx(user="bob"))
    assert not p.permits("counter.add", ctx(user="bob"))  # user narrows the tenant
    assert not p.permits("calculator", ctx(user="eve"))
    assert not p.permits("time.x", ctx(user="bob", allowed=("counter.add",)))


def test_globs_are_case_sensitive() -> None:
    p = permissions(allow=["time.*"])
    assert not p.permits("TIME.get_current_time", ctx())


async def test_policy_executor_denies_before_looking_the_tool_up() -> None:
    executor = PolicyExecutor(default_registry(), permissions=permissions(deny=["calc*"]))
    denied = await executor.execute("calculator", {"expression": "1+1"}, timeout_s=1, call=ctx())
    assert denied.error_code == "TOOL_ACCESS_DENIED"
    assert denied.content == "Error: tool access denied: calculator"
    unknown = await executor.execute("nope", {}, timeout_s=1, call=ctx())
    assert unknown.error_code == "TOOL_NOT_FOUND"
    ok = await executor.execute("current_time", {"timezone": "UTC"}, timeout_s=1, call=ctx())
    assert not ok.is_error
    health = executor.health()
    assert health["tools"]["calculator"]["error_codes"] == {"TOOL_ACCESS_DENIED": 1}
    assert health["tools"]["(unknown)"]["errors"] == 1
    assert executor.policy("calculator").read_only
    assert executor.read_only("calculator")


# --- mcpServers config ----------------------------------------------------------------------------


def test_parse_stdio_and_http_entries() -> None:
    servers = parse_mcp_servers(
        {
            "mcpServers": {
                "time": {"command": "python", "args": ["-m", "mcp_server_time"], "env": {"A": "1"}},
                "web": {"url": "http://h:1/mcp", "headers": {"Authorization": "Bearer x"}},
                "typed": {"type": "streamable-http", "url": "http://h:2/mcp", "timeout_s": 5},
                "off": {"command": "x", "disabled": True, "max_concurrency": 2},
            }
        }
    )
    assert servers["time"].transport == "stdio"
    assert servers["time"].target == "python -m mcp_server_time"
    assert servers["web"].transport == "http"
    assert servers["typed"].transport == "http"
    assert servers["typed"].timeout_s == 5
    assert servers["off"].disabled


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"mcpServers": {"a.b": {"command": "x"}}}, "no dots"),
        ({"mcpServers": {"a": {"type": "sse", "url": "http://h"}}}, "not supported"),
        ({"mcpServers": {"a": {"args": []}}}, "needs 'command'"),
        ({"mcpServers": {"a": {"type": "http"}}}, "needs 'url'"),
        ({"mcpServers": {"a": {"command": "x", "max_concurrency": 0}}}, "max_concurrency"),
        ({"mcpServers": []}, "must be an object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_invalid_server_config_is_a_config_error(document: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_mcp_servers(document)


def test_servers_from_file_and_inline_env_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps({"mcpServers": {"a": {"command": "one"}, "b": {"command": "file-b"}}})
    )
    inline = {"mcpServers": {"b": {"url": "http://h/mcp"}, "c": {"command": "x", "disabled": True}}}
    monkeypatch.setenv("AGENTSTREAM_TOOLS__MCP_SERVERS", json.dumps(inline))
    monkeypatch.setenv("AGENTSTREAM_TOOLS__MCP_SERVERS_FILE", str(path))
    settings = Settings()
    servers = {s.name: s for s in load_mcp_servers(settings.tools)}
    assert set(servers) == {"a", "b"}  # c is disabled
    assert servers["b"].transport == "http"  # inline replaces the file's entry


def test_safe_dump_masks_env_and_header_values() -> None:
    settings = Settings(
        tools={
            "mcp_servers": {
                "mcpServers": {
                    "a": {"command": "x", "env": {"TOKEN": "s3cret"}},
                    "b": {"url": "http://h", "headers": {"Authorization": "Bearer s3cret"}},
                }
            }
        }
    )
    dumped = json.dumps(settings.safe_dump())
    assert "s3cret" not in dumped
    assert "TOKEN" in dumped
    assert "Authorization" in dumped
    assert settings.tools.mcp_servers["mcpServers"]["a"]["env"]["TOKEN"] == "s3cret"


def test_env_references_are_expanded() -> None:
    assert expand_env({"A": "Bearer ${TOKEN}", "B": "${MISSING}x"}, {"TOKEN": "t"}) == {
        "A": "Bearer t",
        "B": "x",
    }

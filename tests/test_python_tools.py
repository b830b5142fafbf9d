"""Python tools: the decorator's schema and policy, calls through the registry (validation,
threads, timeouts, idempotency key), the loader's module paths and entry points, refusals."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agentstream
from agentstream.config import Settings
from agentstream.exceptions import ConfigError
from agentstream.resilience.breaker import BreakerConfig, BreakerRegistry
from agentstream.testing import TestPipeline
from agentstream.tools.base import CallContext
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.factory import build_tools
from agentstream.tools.python import PythonTool, tool
from agentstream.tools.python.loader import ENTRY_POINT_GROUP, load_python_tools
from agentstream.tools.registry import ToolRegistry
from agentstream.tools.settings import ToolOverride, ToolSettings
from tests.support import python_tools as sample
from tests.support.redis import connect

MODULE = "tests.support.python_tools"


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    sample.reset()
    yield
    sample.reset()


def registry() -> ToolRegistry:
    reg = ToolRegistry()
    for t in load_python_tools(ToolSettings(python_modules=[MODULE], python_entry_points=False)):
        reg.register(t, policy=t.policy, timeout_s=t.timeout_s, breaker=f"python:{t.name}")
    return reg


def ctx(key: str = "req-1:0:0") -> CallContext:
    return CallContext(
        tenant_id="acme", user_id="ann", request_id="req-1", session_id="s", idempotency_key=key
    )


def test_exported_from_the_package_top_level() -> None:
    assert agentstream.tool is tool
    assert "tool" in agentstream.__all__


def test_schema_from_type_hints_and_docstring() -> None:
    spec = sample.read_note.spec
    assert spec.name == "read_note"
    assert spec.description == "Read a note (sync, read-only, cacheable for 60 s)."
    schema = spec.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["key"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["key"]["type"] == "string"
    assert schema["properties"]["key"]["description"] == "The note's name."
    # Annotated[..., Field(description=...)] is used as written
    peek = sample.peek_note.spec.input_schema["properties"]["key"]
    assert (peek["description"], peek["minLength"]) == ("Which note.", 1)
    # the injected idempotency key is not an argument the model fills in
    assert set(sample.append_log.spec.input_schema["properties"]) == {"line"}
    # a pydantic model argument becomes a nested schema
    assert "$defs" in sample.last_day.spec.input_schema


def test_policies_side_effecting_unless_read_only() -> None:
    assert sample.read_note.policy.read_only
    assert sample.read_note.policy.cache_ttl_s == 60
    assert sample.peek_note.policy.read_only
    assert sample.peek_note.policy.cache_ttl_s is None  # not cacheable unless configured
    log = sample.append_log.policy
    assert (log.read_only, log.idempotent, log.destructive) == (False, False, True)
    assert log.accepts_idempotency_key
    assert not sample.sleepy.policy.accepts_idempotency_key
    assert sample.sleepy.timeout_s == 0.2


def test_still_callable_as_the_function() -> None:
    sample.NOTES["a"] = "x"
    assert sample.read_note("a") == "x"
    assert isinstance(sample.read_note, PythonTool)
    assert sample.read_note.__doc__ is not None
    assert getattr(sample.read_note, "__name__", None) == "read_note"


def plain(key: str) -> str:
    return key


def variadic(*keys: str) -> str:
    return ",".join(keys)


@pytest.mark.parametrize(
    ("options", "function", "problem"),
    [
        ({"cache_ttl_s": 60}, plain, "cache_ttl_s needs read_only=True"),
        ({"name": "no spaces"}, plain, "tool name"),
        ({}, variadic, "passable by keyword"),
        ({"timeout_s": 0}, plain, "timeout_s must be > 0"),
    ],
)
def test_decorator_refuses_misuse(options: dict[str, Any], function: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        tool(**options)(function)


async def test_sync_tool_runs_off_the_event_loop_thread() -> None:
    sample.NOTES["k"] = "v"
    outcome = await registry().execute("read_note", {"key": "k"}, timeout_s=5, call=ctx())
    assert (outcome.content, outcome.is_error) == ("v", False)
    assert sample.THREADS
    assert sample.THREADS[0] != threading.get_ident()


async def test_arguments_are_validated_before_the_call() -> None:
    reg = registry()
    for bad in ({}, {"key": 3}, {"key": "k", "extra": 1}):
        outcome = await reg.execute("read_note", bad, timeout_s=5, call=ctx())
        assert outcome.error_code == "TOOL_INVALID_ARGUMENTS", bad
    # pydantic's rules beyond the JSON Schema (here a model's field bounds) are checked too,
    # and the message names the field, never the value
    outcome = await reg.execute(
        "calendar.last_day", {"period": {"start": "2026-11-20", "days": 99}}, timeout_s=5
    )
    assert outcome.error_code == "TOOL_INVALID_ARGUMENTS"
    assert "period" in outcome.content
    assert "99" not in outcome.content
    assert sample.CALLS["read_note"] == 0


async def test_converted_arguments_and_json_results() -> None:
    outcome = await registry().execute(
        "calendar.last_day", {"period": {"start": "2026-11-20", "days": 11}}, timeout_s=5
    )
    assert outcome.content == '{"last_day":"2026-11-30"}'


async def test_idempotency_key_is_passed_and_honoured() -> None:
    reg = registry()
    assert reg.policy("append_log").accepts_idempotency_key
    first = await reg.execute("append_log", {"line": "a"}, timeout_s=5, call=ctx("r:0:0"))
    again = await reg.execute("append_log", {"line": "a"}, timeout_s=5, call=ctx("r:0:0"))
    other = await reg.execute("append_log", {"line": "b"}, timeout_s=5, call=ctx("r:0:1"))
    assert first.content == again.content == "appended line 1"
    assert other.content == "appended line 2"
    assert sample.KEYS == ["r:0:0", "r:0:0", "r:0:1"]
    assert sample.LOG == ["a", "b"]


async def test_timeout_and_failure_become_outcomes() -> None:
    reg = registry()
    slow = await reg.execute("sleepy", {"seconds": 0.6}, timeout_s=30, call=ctx())
    assert slow.error_code == "TOOL_TIMEOUT"  # the decorator's 0.2 s, not the caller's 30 s
    failed = await reg.execute("broken", {}, timeout_s=5, call=ctx())
    assert failed.error_code == "TOOL_FAILED"
    assert "the backend said no" in failed.content
    await asyncio.sleep(0.5)  # let the timed-out thread finish before the next test


def test_module_object_and_duplicate_paths() -> None:
    whole = load_python_tools(ToolSettings(python_modules=[MODULE], python_entry_points=False))
    assert [t.name for t in whole] == [
        "read_note",
        "peek_note",
        "append_log",
        "calendar.last_day",
        "sleepy",
        "broken",
        "flaky_backend",
    ]
    one = load_python_tools(
        ToolSettings(python_modules=[f"{MODULE}:peek_note", MODULE], python_entry_points=False)
    )
    assert one[0] is sample.peek_note
    assert len(one) == len(whole)  # the same tool reached twice is registered once


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no_such_module_xyz", "cannot import (ModuleNotFoundError: No module named"),
        ("tests.support.pytools_bad.raises_on_import", "RuntimeError: missing API_TOKEN"),
        ("tests.support.pytools_bad.no_tools", "defines no @agentstream.tool"),
        (f"{MODULE}:nothing_here", "has no attribute 'nothing_here'"),
        (f"{MODULE}:reset", "not an @agentstream.tool"),
        ("", "expected 'package.module'"),
    ],
)
def test_a_broken_module_path_is_refused_in_one_line(path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_python_tools(ToolSettings(python_modules=[path], python_entry_points=False))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("tools.python_modules")
    assert repr(path) in message
    assert reason in message


def test_a_builtin_name_is_refused_at_build_time() -> None:
    settings = Settings(
        tools=ToolSettings(
            python_modules=["tests.support.pytools_bad.shadows_builtin"],
            python_entry_points=False,
        )
    )
    with pytest.raises(ConfigError, match=r"Python tool 'calculator' .* cannot be registered"):
        build_tools(settings)


def test_build_tools_registers_python_tools_with_overrides_and_breakers() -> None:
    settings = Settings(
        tools=ToolSettings(
            python_modules=[MODULE],
            python_entry_points=False,
            overrides={
                "peek_note": ToolOverride(cache_ttl_s=30),
                "append_log": ToolOverride(timeout_s=9),
            },
        )
    )
    executor = build_tools(settings)
    registry = executor.inner
    assert isinstance(registry, ToolRegistry)
    assert executor.cache_ttl_s("read_note") == 60  # its decorator
    assert executor.cache_ttl_s("peek_note") == 30  # the operator's override
    assert executor.cache_ttl_s("calculator") == 0  # read-only, not configured: not cached
    assert executor.cache_ttl_s("append_log") == 0  # side-effecting: never cached
    assert registry.timeout_for("append_log", 60) == 9
    assert registry.breaker_scope("read_note") == "python:read_note"
    assert registry.breaker_scope("calendar.last_day") == "python:calendar.last_day"
    assert registry.breaker_scope("calculator") is None


def _install_entry_point(root: Path, dist: str, value: str) -> None:
    """A minimal installed distribution on ``sys.path`` declaring one entry point."""
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnotes = {value}\n")


def test_entry_points_are_loaded_unless_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path, "notes_tools", f"{MODULE}:read_note")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_python_tools(ToolSettings())
    assert sample.read_note in loaded
    assert load_python_tools(ToolSettings(python_entry_points=False)) == []


def test_a_broken_entry_point_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_entry_point(tmp_path, "bad_tools", "tests.support.pytools_bad.raises_on_import")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_python_tools(ToolSettings())
    message = str(info.value)
    assert "\n" not in message
    assert "entry point 'notes'" in message
    assert "bad_tools" in message
    assert "missing API_TOKEN" in message
    assert "tools.python_entry_points=false" in message
    sys.modules.pop("tests.support.pytools_bad.raises_on_import", None)


async def test_python_tools_in_the_in_memory_test_pipeline() -> None:
    settings = Settings(tools=ToolSettings(python_modules=[MODULE], python_entry_points=False))
    sample.NOTES["plan"] = "ship it"
    async with TestPipeline(settings=settings) as pipeline:
        answer = await pipeline.ask('call read_note {"key": "plan"}')
        logged = await pipeline.ask('call append_log {"line": "x"}', session_id="other")
    assert (answer.state, answer.content) == ("COMPLETED", "ship it")
    assert logged.content == "appended line 1"
    received = list(sample.KEYS)
    assert received == [f"{logged.request_id}:t0:c0"]


def test_registry_uses_a_python_tools_own_policy() -> None:
    reg = ToolRegistry([sample.append_log])
    assert reg.policy("append_log").accepts_idempotency_key


@pytest.mark.integration
async def test_a_python_tools_breaker_opens_for_it_alone(
    redis_url: str, unique_prefix: str
) -> None:
    redis = connect(redis_url)
    config = BreakerConfig(failure_threshold=3, recovery_timeout_s=60)
    executor = PolicyExecutor(
        registry(), breakers=BreakerRegistry(redis, config, namespace=unique_prefix)
    )
    try:
        for _ in range(3):
            outcome = await executor.execute("flaky_backend", {}, timeout_s=1)
            assert outcome.error_code == "TOOL_UNAVAILABLE"
        refused = await executor.execute("flaky_backend", {}, timeout_s=1)
        assert "circuit open" in refused.content
        assert sample.CALLS["flaky_backend"] == 3  # not called while open
        sample.NOTES["k"] = "still fine"
        other = await executor.execute("read_note", {"key": "k"}, timeout_s=1)
        assert other.content == "still fine"  # another Python tool: its own breaker
    finally:
        await redis.aclose()

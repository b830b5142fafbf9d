"""Expected failures of the CLI end in one line naming the setting to fix, a non-zero exit and no
traceback (issue 11). Each case runs the real ``agentstream`` command in a subprocess: against
ports nothing listens on, or against the broker and Redis the fixtures started where a healthy
component is needed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from tests.support.workers import worker_env

CLI = [sys.executable, "-m", "agentstream.cli"]
KAFKA_VAR = "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS"
REDIS_VAR = "AGENTSTREAM_REDIS_URL"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def clean_env(**variables: str) -> dict[str, str]:
    """The test process's environment without any AGENTSTREAM_* variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AGENTSTREAM_")}
    env.update(variables)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def spawn_worker(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "worker"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_failure(
    done: subprocess.CompletedProcess[str],
    *names: str,
    code: int | None = None,
    reports: bool = False,
) -> str:
    """One line on stderr names ``names``; with ``reports``, warnings the checks logged about
    the components they looked at (MCP servers, model providers) may come before it."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if reports:
        lines = [line for line in lines if "[warning" not in line]
    assert done.returncode != 0, done.stderr
    if code is not None:
        assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def unreachable(tmp_path: Path) -> dict[str, str]:
    return clean_env(
        **{
            KAFKA_VAR: f"127.0.0.1:{free_port()}",
            REDIS_VAR: f"redis://127.0.0.1:{free_port()}/0",
            "AGENTSTREAM_RUN_DIR": str(tmp_path / "run"),
        }
    )


# --- no broker --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["worker"],
        ["send", "hello"],
        ["send", "hello", "--wait"],
        ["tail", "agent.responses"],
        ["topics", "list"],
        ["topics", "create"],
        ["dlq", "list"],
    ],
    ids=lambda a: " ".join(a),
)
def test_unreachable_kafka_is_one_line_naming_the_variable(args: list[str], tmp_path: Path) -> None:
    done = run_cli(args, unreachable(tmp_path), tmp_path)
    line = assert_one_line_failure(done, KAFKA_VAR, "cannot reach Kafka")
    assert "127.0.0.1" in line


def test_no_kafka_configured_says_how_to_get_one(tmp_path: Path) -> None:
    done = run_cli(["worker"], clean_env(AGENTSTREAM_REDIS_URL="redis://x"), tmp_path)
    assert_one_line_failure(done, KAFKA_VAR, "agentstream dev")


def test_unreachable_redis_for_usage(tmp_path: Path) -> None:
    done = run_cli(["usage"], unreachable(tmp_path), tmp_path)
    assert_one_line_failure(done, REDIS_VAR)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run_cli(["--debug", "topics", "list"], unreachable(tmp_path), tmp_path)
    assert done.returncode != 0
    assert "Traceback" in done.stderr


# --- configuration errors ---------------------------------------------------------------------


def test_bad_value_names_the_variable(tmp_path: Path) -> None:
    env = unreachable(tmp_path) | {"AGENTSTREAM_LIMITS__MAX_IN_FLIGHT": "abc"}
    done = run_cli(["worker"], env, tmp_path)
    line = assert_one_line_failure(done, "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT", "'abc'", code=2)
    assert "integer" in line


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    providers = {"gpt": {"kind": "openai", "model": "m", "api_key": ["hunter2"]}}
    env = unreachable(tmp_path) | {"AGENTSTREAM_LLM__PROVIDERS": json.dumps(providers)}
    done = run_cli(["send", "x"], env, tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_LLM__PROVIDERS (gpt.api_key)", code=2)
    assert "hunter2" not in done.stderr


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "agentstream.toml"
    config.write_text('[limits]\nmax_turns = 3\n\n[topics]\nrequests = = "x"\n')
    done = run_cli(["send", "hi"], unreachable(tmp_path), tmp_path)
    assert_one_line_failure(done, f"{config.name}:5", "malformed TOML", code=2)


def test_bad_value_in_toml_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "ops.toml"
    config.write_text('[topics]\npartitions = 4\n\n[limits]\nmax_turns = 3\nmax_in_flight = "x"\n')
    env = unreachable(tmp_path) | {"AGENTSTREAM_CONFIG_FILE": str(config)}
    done = run_cli(["worker"], env, tmp_path)
    assert_one_line_failure(done, f"{config}:6", code=2)


def test_a_named_config_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    env = unreachable(tmp_path) | {"AGENTSTREAM_CONFIG_FILE": str(tmp_path / "nope.toml")}
    done = run_cli(["tail", "agent.responses"], env, tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_CONFIG_FILE", "nope.toml", code=2)


def test_unknown_variables_are_warned_with_a_did_you_mean(tmp_path: Path) -> None:
    env = unreachable(tmp_path) | {
        "AGENTSTREAM_LIMITS__MAX_INFLIGHT": "3",
        "AGENTSTREAM_KAFKA__BOOTSTRAP_SERVERS": "typo:9092",
    }
    done = run_cli(["topics", "list"], env, tmp_path)
    warnings = [line for line in done.stderr.splitlines() if "unknown setting variable" in line]
    assert len(warnings) == 2, done.stderr
    assert any(
        "AGENTSTREAM_LIMITS__MAX_INFLIGHT" in w and "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT" in w
        for w in warnings
    )
    assert any(
        "AGENTSTREAM_KAFKA__BOOTSTRAP_SERVERS" in w and f"={KAFKA_VAR}" in w for w in warnings
    )
    assert "Traceback" not in done.stderr


# --- a healthy broker, something else wrong ---------------------------------------------------


@pytest.mark.integration
async def test_worker_with_redis_down_stops_before_joining(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    env = worker_env(settings) | {REDIS_VAR: f"redis://127.0.0.1:{free_port()}/0"}
    done = await asyncio.to_thread(run_cli, ["worker"], env, tmp_path)
    assert_one_line_failure(done, REDIS_VAR, "cannot reach Redis")


@pytest.mark.integration
async def test_worker_with_missing_topics_names_the_topic_setting(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings, [settings.topics.requests])
    done = await asyncio.to_thread(run_cli, ["worker"], worker_env(settings), tmp_path)
    line = assert_one_line_failure(done, "missing on Kafka", "agentstream topics create")
    assert "AGENTSTREAM_TOPICS__" in line


@pytest.mark.integration
async def test_worker_with_other_partition_counts_names_the_setting(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    env = worker_env(settings) | {"AGENTSTREAM_TOPICS__PARTITIONS": "6"}
    done = await asyncio.to_thread(run_cli, ["worker"], env, tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_TOPICS__PARTITIONS", "has 4")


@pytest.mark.integration
async def test_send_to_a_missing_requests_topic(settings_factory: Any, tmp_path: Path) -> None:
    settings: Settings = settings_factory()  # no topics created
    done = await asyncio.to_thread(run_cli, ["send", "hi"], worker_env(settings), tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_TOPICS__REQUESTS", "missing")


@pytest.mark.integration
async def test_required_mcp_server_down_stops_the_worker(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    servers = {"mcpServers": {"gone": {"url": f"http://127.0.0.1:{free_port()}/mcp"}}}
    env = worker_env(settings) | {
        "AGENTSTREAM_TOOLS__MCP_SERVERS": json.dumps(servers),
        "AGENTSTREAM_TOOLS__CONNECT_TIMEOUT_S": "1",
        "AGENTSTREAM_STARTUP__REQUIRE_MCP_SERVERS": "true",
    }
    done = await asyncio.to_thread(run_cli, ["worker"], env, tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_TOOLS__MCP_SERVERS", "gone", reports=True)


@pytest.mark.integration
async def test_required_model_route_down_stops_the_worker(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    provider = {
        "kind": "openai",
        "model": "m",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "api_key": "sk-test",
    }
    env = worker_env(settings) | {
        "AGENTSTREAM_LLM__PROVIDERS": json.dumps({"gpt": provider}),
        "AGENTSTREAM_LLM__MODEL": "gpt",
        "AGENTSTREAM_STARTUP__REQUIRE_MODELS": "true",
        "AGENTSTREAM_STARTUP__CHECK_TIMEOUT_S": "3",
    }
    done = await asyncio.to_thread(run_cli, ["worker"], env, tmp_path)
    line = assert_one_line_failure(done, "AGENTSTREAM_LLM__PROVIDERS (gpt)", reports=True)
    assert "'gpt'" in line


# --- the schema registry ----------------------------------------------------------------------


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def failing_registry() -> AsyncIterator[str]:
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error_code": 50301, "message": "warming up"}, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    async for url in _serve(app):
        yield url


@pytest.mark.integration
async def test_worker_gives_up_on_a_registry_that_stays_5xx(
    settings_factory: Any, failing_registry: str, tmp_path: Path
) -> None:
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    env = worker_env(settings) | {
        "AGENTSTREAM_SCHEMA_REGISTRY_URL": failing_registry,
        "AGENTSTREAM_STARTUP__REGISTRY_RETRY_S": "1.5",
    }
    done = await asyncio.to_thread(run_cli, ["worker"], env, tmp_path)
    assert_one_line_failure(done, "AGENTSTREAM_SCHEMA_REGISTRY_URL", "HTTP 503")


# --- production logs --------------------------------------------------------------------------


@pytest.mark.integration
async def test_production_logs_are_json_only_and_an_idle_stop_is_clean(
    settings_factory: Any, tmp_path: Path
) -> None:
    """Every stderr line of a worker in production (start, run, idle stop) is a JSON object, and
    an idle worker's clean stop says nothing about an expired grace."""
    settings: Settings = settings_factory()
    await ensure_topics(settings)
    env = worker_env(settings) | {
        "AGENTSTREAM_ENV": "production",
        "AGENTSTREAM_LOG_LEVEL": "INFO",
        "AGENTSTREAM_MONITOR_ME": "1",  # an unknown variable: its warning is JSON too
    }
    proc = spawn_worker(env, tmp_path)
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 60)
            assert line, f"worker ended early: {lines}"
            lines.append(line)
            if "worker running" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.to_thread(proc.communicate, None, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += rest.splitlines()
    events = [json.loads(line) for line in lines if line.strip()]  # fails on a plain line
    names = [e["event"] for e in events]
    assert "worker started" in names
    assert "worker stopped" in names
    assert "unknown setting variable ignored" in names
    assert not any("grace expired" in n for n in names), names
    assert proc.returncode == 0


def test_help_imports_no_client_library() -> None:
    """``agentstream --help`` loads every command module: they import only typer and rich at
    module level (the CPU figure is bench/cli_startup.py's)."""
    heavy = ("aiokafka", "faust", "redis", "pydantic", "mcp", "openai", "anthropic", "httpx")
    code = (
        "import sys, agentstream.cli.main; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""

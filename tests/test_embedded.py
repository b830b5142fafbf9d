"""The embedded dev stack starts real binaries and never leaves a process behind."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentstream.config import Settings
from agentstream.embedded import DevStack, EmbeddedKafka, EmbeddedRedis, EmbeddedStackError
from agentstream.streams.admin import list_topics
from agentstream.streams.topology import pipeline_topics

pytestmark = pytest.mark.integration

GONE_TIMEOUT_S = 10.0


def _is_gone(pid: int) -> bool:
    """No such process, or only a zombie (exited, waiting for a parent that is not us to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else (pid reuse)
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in {"Z", "X"}


def _still_alive(pids: Iterable[int], timeout_s: float = GONE_TIMEOUT_S) -> list[int]:
    """The pids still alive once ``timeout_s`` has passed (returns early when all are gone)."""
    deadline = time.monotonic() + timeout_s
    remaining = list(pids)
    while remaining:
        remaining = [pid for pid in remaining if not _is_gone(pid)]
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return remaining


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        pytest.fail(f"no output within {timeout_s}s")
    return proc.stdout.readline()


def _read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    seen = ""
    while marker not in seen:
        line = _read_line(proc, max(0.1, deadline - time.monotonic()))
        if not line:
            pytest.fail(f"process ended before printing {marker!r}; output:\n{seen}")
        seen += line
    return seen


def _env_without_backends(run_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS", "AGENTSTREAM_REDIS_URL"}
    }
    env["AGENTSTREAM_RUN_DIR"] = str(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- single servers ---------------------------------------------------------------------------


def test_servers_start_answer_and_stop_without_leftovers(tmp_path: Path) -> None:
    kafka = EmbeddedKafka(run_dir=tmp_path)
    redis = EmbeddedRedis(run_dir=tmp_path)
    started = time.monotonic()
    kafka.start()
    redis.start()
    start_s = time.monotonic() - started
    pids = [kafka.pid, redis.pid]
    assert None not in pids
    try:
        assert kafka.running
        assert redis.running
        assert kafka.address == f"127.0.0.1:{kafka.port}"
        assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
        assert kafka.probe()
        assert redis.probe()
    finally:
        started = time.monotonic()
        redis.stop()
        kafka.stop()
        stop_s = time.monotonic() - started
    assert _still_alive(pid for pid in pids if pid is not None) == []
    assert not kafka.running
    assert not redis.running
    assert (tmp_path / "tansu.log").is_file()
    assert (tmp_path / "redis.log").is_file()
    print(f"start {start_s:.3f}s, stop {stop_s:.3f}s")


def test_missing_binary_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-redis-server"
    with pytest.raises(EmbeddedStackError, match="binary not found"):
        EmbeddedRedis(run_dir=tmp_path, binary=missing).start()


def test_failed_start_names_the_log_file(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        redis = EmbeddedRedis(run_dir=tmp_path, port=port)
        with pytest.raises(EmbeddedStackError) as caught:
            redis.start()
    message = str(caught.value)
    assert "exited with code" in message
    assert str(redis.log_path) in message
    assert redis.pid is not None
    assert _still_alive([redis.pid]) == []


# --- the whole stack --------------------------------------------------------------------------


async def test_dev_stack_starts_both_and_creates_topics(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path, kafka_bootstrap_servers=None, redis_url=None)
    stack = DevStack(settings)
    async with stack as live:
        assert stack.kafka_started
        assert stack.redis_started
        assert len(stack.pids) == 2
        assert stack.run_dir.parent.name == tmp_path.name
        assert stack.run_dir.name.startswith("run-")
        assert live.kafka_bootstrap_servers is not None
        assert live.redis_url is not None
        topics = await list_topics(live)
        assert all(topics[name] == 8 for name in pipeline_topics(settings))
        client = aioredis.from_url(live.redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    assert _still_alive(stack.pids) == []
    assert {p.name for p in stack.run_dir.iterdir()} >= {"tansu.log", "redis.log"}


async def test_dev_stack_starts_only_what_settings_lack(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(kafka_bootstrap_servers=None)
    stack = DevStack(settings, run_dir=tmp_path / "stack")
    async with stack as live:
        assert stack.kafka_started
        assert not stack.redis_started
        assert live.redis_url == settings.redis_url
        assert live.kafka_bootstrap_servers != settings.kafka_bootstrap_servers
        assert len(stack.pids) == 1
    assert _still_alive(stack.pids) == []


async def test_dev_stack_stops_what_it_started_when_start_up_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EmbeddedRedis, "default_binary", lambda self: tmp_path / "missing")
    stack = DevStack(Settings(run_dir=tmp_path, kafka_bootstrap_servers=None, redis_url=None))
    with pytest.raises(EmbeddedStackError, match="binary not found"):
        await stack.__aenter__()
    assert stack.kafka_started
    assert len(stack.pids) == 1
    assert _still_alive(stack.pids) == []


# --- orphan protection ------------------------------------------------------------------------

_CHILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agentstream.embedded import EmbeddedKafka, EmbeddedRedis

    run_dir = Path(sys.argv[1])
    redis = EmbeddedRedis(run_dir=run_dir)
    redis.start()
    kafka = EmbeddedKafka(run_dir=run_dir)
    kafka.start()
    print(redis.pid, kafka.pid, flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)  # without stop(): the atexit hook must clean up
    time.sleep(120)
    """
)


def _spawn_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = _read_line(parent, 30.0)
    pids = [int(pid) for pid in line.split()]
    assert len(pids) == 2, line
    return parent, pids


def test_children_die_when_parent_is_killed(tmp_path: Path) -> None:
    parent, pids = _spawn_parent(tmp_path, "sleep")
    try:
        assert _still_alive(pids, timeout_s=0) == pids
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert _still_alive(pids) == []


def test_children_stop_when_parent_exits_without_stopping_them(tmp_path: Path) -> None:
    parent, pids = _spawn_parent(tmp_path, "exit")
    assert parent.wait(timeout=30) == 0
    assert _still_alive(pids) == []
    assert "Received SIGTERM" in (tmp_path / "redis.log").read_text()  # a clean stop, not KILL


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_command_prints_addresses_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from agentstream.cli.main import app; app()", "dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env_without_backends(tmp_path),
    )
    try:
        banner = _read_until(proc, "Ctrl-C to stop")
        assert re.search(r"Kafka\s+127\.0\.0\.1:\d+", banner), banner
        assert re.search(r"Redis\s+redis://127\.0\.0\.1:\d+/0", banner), banner
        assert str(tmp_path.resolve()) in banner
        pids = [int(pid) for pid in re.findall(r"pid (\d+)", banner)]
        assert len(pids) == 2, banner

        proc.send_signal(stop_signal)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Stopped" in output
    assert _still_alive(pids) == []

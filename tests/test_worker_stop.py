"""SIGTERM stops a worker within its bound even when the broker has gone away."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.embedded import EmbeddedKafka
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration


def spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentstream.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_sigterm_with_the_broker_gone_exits_within_the_bound(
    settings_factory: Any, tmp_path: Path
) -> None:
    with EmbeddedKafka(run_dir=tmp_path / "kafka") as kafka:
        settings: Settings = settings_factory(
            kafka=FAST_KAFKA, kafka_bootstrap_servers=kafka.address
        )
        await ensure_topics(settings)
        env = worker_env(settings) | {"AGENTSTREAM_TIMEOUTS__SHUTDOWN_GRACE_S": "1"}
        proc = spawn_worker(env)
        try:
            assert proc.stderr is not None
            line = await asyncio.to_thread(proc.stderr.readline)
            assert b"worker running" in line
        except BaseException:
            proc.kill()
            raise
    # the broker is stopped now; the worker must still stop: grace 1 s + 15 s margin
    proc.send_signal(signal.SIGTERM)
    returncode = await asyncio.to_thread(proc.wait, 30)
    assert returncode in (0, 3)

"""``agentstream worker`` subprocesses for tests: environment from Settings, start, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from agentstream.config import Settings
from tests.support.kafka import FAST_KAFKA


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The ``AGENTSTREAM_*`` variables that make a worker process use ``settings``."""
    env = dict(os.environ)
    env.update(
        {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "AGENTSTREAM_REDIS_URL": settings.redis_url or "",
            "AGENTSTREAM_CONSUMER_GROUP": settings.consumer_group,
            "AGENTSTREAM_STATE__KEY_PREFIX": settings.state.key_prefix,
            "AGENTSTREAM_LOG_LEVEL": "WARNING",
        }
    )
    env["AGENTSTREAM_TOPICS__PARTITIONS"] = str(settings.topics.partitions)
    names = ("requests", "generation", "tool_calls", "responses", "errors", "metrics")
    for name in (*names, "approvals", "approval_decisions", "approval_audit", "delegation_results"):
        env[f"AGENTSTREAM_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    for key, value in FAST_KAFKA.items():
        env[f"AGENTSTREAM_KAFKA__{key.upper()}"] = str(value)
    env.update(extra or {})
    return env


def start_worker(
    settings: Settings, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentstream.cli", "worker"],
        env=worker_env(settings, extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

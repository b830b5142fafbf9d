"""Shared bench plumbing: an embedded stack, a worker process, and its peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentstream.config import Settings
from agentstream.embedded.process import die_with_parent_hook

FAST_KAFKA = {
    "session_timeout_s": 2.0,
    "heartbeat_interval_s": 0.5,
    "rebalance_timeout_s": 2.0,
    "commit_interval_s": 1.0,
    "fetch_max_wait_ms": 5,
}


def bench_settings(live: Settings, *, fetch_max_wait_ms: int = 5, **overrides: Any) -> Settings:
    kafka = {**FAST_KAFKA, "fetch_max_wait_ms": fetch_max_wait_ms}
    return live.model_copy(update={"kafka": live.kafka.model_copy(update=kafka), **overrides})


def worker_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "AGENTSTREAM_REDIS_URL": settings.redis_url or "",
            "AGENTSTREAM_LOG_LEVEL": "WARNING",
        }
    )
    for key in FAST_KAFKA:
        env[f"AGENTSTREAM_KAFKA__{key.upper()}"] = str(getattr(settings.kafka, key))
    env.update(extra)
    return env


def start_worker(settings: Settings, extra: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """The worker's log goes to ``<run_dir>/bench-worker.log``."""
    Path(settings.run_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(settings.run_dir) / "bench-worker.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "agentstream.cli", "worker", *args],
        env=worker_env(settings, extra),
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=die_with_parent_hook(),
    )


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def worker_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks

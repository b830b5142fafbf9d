"""SIGTERM stops a worker within its bound even when the broker has gone away; the retry
forwarder's consumer stops with a fetch pending on the gone broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.embedded import EmbeddedKafka
from agentstream.processors.base import Inbound, Outbound, StageResult
from agentstream.streams.admin import ensure_topics
from agentstream.streams.retry_consumer import RetryConsumer
from agentstream.streams.runner import StageRunner
from tests.support.kafka import FAST_KAFKA
from tests.support.wait import wait_until
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
            # keep reading its log: with the broker gone aiokafka logs a line per reconnect, and
            # a full pipe would block the worker's logging (and its shutdown) in this test only
            threading.Thread(target=proc.stderr.read, daemon=True).start()
        except BaseException:
            proc.kill()
            raise
    # the broker is stopped now; the worker must still stop: grace 1 s + 15 s margin
    proc.send_signal(signal.SIGTERM)
    try:
        returncode = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:  # it did not stop: the test fails, and leaves no process behind
            proc.kill()
            proc.wait(10)
    assert returncode in (0, 3)


class _FailedFetch(logging.Handler):
    """Set when aiokafka's fetcher reports a failed fetch: it then sleeps out its retry backoff,
    the moment a ``stop()`` gets the cancellation of that pending fetch back."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Failed fetch messages"):
            self.seen.set()


async def test_the_retry_consumer_stops_with_a_fetch_pending_and_the_broker_gone(
    settings_factory: Any, tmp_path: Path
) -> None:
    failed = _FailedFetch()
    fetcher_log = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher_log.addHandler(failed)
    try:
        with EmbeddedKafka(run_dir=tmp_path / "kafka") as kafka:
            settings: Settings = settings_factory(
                kafka=FAST_KAFKA, kafka_bootstrap_servers=kafka.address
            )
            await ensure_topics(settings)
            consumer = RetryConsumer(settings, _idle_runner())
            await consumer.start()
            await wait_until(consumer.assignment, "retry partitions assigned")
            kafka_consumer = consumer._consumer
            await wait_until(
                lambda: all(
                    kafka_consumer.highwater(tp) is not None for tp in kafka_consumer.assignment()
                ),
                "fetching (positions known; fetches, not offset lookups, are pending)",
            )
        # the broker is gone: wait for a fetch that fails, and stop during its retry backoff
        await asyncio.wait_for(failed.seen.wait(), 30)
        async with asyncio.timeout(15):
            await consumer.stop()  # returns: the pending fetch's cancellation stays inside
    finally:
        fetcher_log.removeHandler(failed)


def _idle_runner() -> StageRunner:
    async def handle(msg: Inbound) -> StageResult:
        raise AssertionError("no record is expected")

    async def publish(records: list[Outbound]) -> None:
        raise AssertionError("nothing is expected to be published")

    return StageRunner(
        stage="retry",
        handler=handle,
        publish=publish,
        dead_letter=lambda msg, code, exc, attempt: StageResult(),
        max_in_flight=4,
    )

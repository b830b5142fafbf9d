"""The CLI against a running pipeline: `send --wait` prints the answer, `tail` decodes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration


async def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentstream.cli", *args],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_send_wait_and_tail(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    async with PipelineWorker(settings):
        sent = await run_cli(settings, "send", "add 2 and 3", "--session", "cli", "--wait")
        assert sent.returncode == 0, sent.stderr
        assert "COMPLETED" in sent.stdout
        assert "The answer is 5." in sent.stdout
        tail = await run_cli(
            settings, "tail", settings.topics.responses, "--from-beginning", "--max", "1"
        )
    assert tail.returncode == 0, tail.stderr
    record = json.loads(tail.stdout.strip().splitlines()[-1])
    assert record["key"] == "cli"
    assert record["value"]["content"] == "The answer is 5."
    assert record["value"]["state"] == "COMPLETED"


async def test_send_stream_prints_the_answer_as_it_is_written(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, llm={"local_latency_s": 0.3})
    await ensure_topics(settings)
    async with PipelineWorker(settings):
        sent = await run_cli(settings, "send", "add 2 and 3", "--session", "cli-s", "--stream")
        tail = await run_cli(
            settings, "tail", settings.topics.stream, "--from-beginning", "--max", "3"
        )
    assert sent.returncode == 0, sent.stderr
    lines = sent.stdout.splitlines()
    assert lines[0] == "The answer is 5."  # the streamed text, then the state line
    assert lines[1].startswith("COMPLETED")
    assert tail.returncode == 0, tail.stderr
    deltas = [json.loads(line)["value"] for line in tail.stdout.strip().splitlines()]
    assert len({d["request_id"] for d in deltas}) == 1
    assert all(d["attempt"] == 1 for d in deltas)


async def test_cancel_command_reports_nothing_to_cancel(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    async with PipelineWorker(settings):
        sent = await run_cli(settings, "send", "add 2 and 3", "--session", "cli-c", "--wait")
        assert sent.returncode == 0, sent.stderr
        request_id = sent.stdout.split("request ")[1].split()[0]
        finished = await run_cli(settings, "cancel", request_id, "--reason", "too late")
        unknown = await run_cli(settings, "cancel", "no-such-request")
    assert finished.returncode == 1, finished.stderr
    assert f"nothing to cancel: request {request_id} had finished" in finished.stdout
    assert unknown.returncode == 1, unknown.stderr
    assert "nothing to cancel: no request no-such-request" in unknown.stdout

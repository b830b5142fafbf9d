"""Start-up checks in process: the schema registry's transient errors are retried until it
answers; settings are named as their variable or file:line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from agentstream.config import Settings
from agentstream.settings_source import describe_setting, toml_line, unknown_variables
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.streams.preflight import StartupCheckError, check_topics
from tests.test_schema_registry import FakeRegistry


@pytest.fixture
async def flaky_registry() -> AsyncIterator[tuple[FakeRegistry, list[int], str]]:
    """A Confluent-API registry that answers 503 to its first three requests, then works."""
    fake = FakeRegistry()
    statuses: list[int] = []

    @web.middleware
    async def warming_up(request: web.Request, handler: Any) -> web.StreamResponse:
        if len(statuses) < 3:
            statuses.append(503)
            return web.json_response({"error_code": 50301, "message": "warming up"}, status=503)
        response: web.StreamResponse = await handler(request)
        statuses.append(response.status)
        return response

    app = web.Application(middlewares=[warming_up, fake._check_auth])
    app.router.add_post("/subjects/{subject}/versions", fake._register)
    app.router.add_get("/schemas/ids/{schema_id}", fake._get_schema)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield fake, statuses, f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.integration
async def test_worker_waits_out_a_registry_answering_5xx_at_start(
    settings_factory: Any, flaky_registry: tuple[FakeRegistry, list[int], str]
) -> None:
    fake, statuses, url = flaky_registry
    settings: Settings = settings_factory(
        schema_registry_url=url,
        schema_registry_username=fake.username,
        schema_registry_password=SecretStr(fake.password),
        startup={"registry_retry_s": 30.0},
    )
    await ensure_topics(settings)
    async with PipelineWorker(settings):
        pass
    assert statuses[:3] == [503, 503, 503]
    assert statuses[3:]
    assert all(s == 200 for s in statuses[3:])
    assert len(fake.subjects) >= 6  # every contract registered once the registry answered


@pytest.mark.integration
async def test_check_topics_reports_missing_and_partition_counts(settings_factory: Any) -> None:
    settings: Settings = settings_factory()
    with pytest.raises(StartupCheckError, match="missing on Kafka") as missing:
        await check_topics(settings)
    assert missing.value.setting.startswith("AGENTSTREAM_TOPICS__")
    await ensure_topics(settings)
    await check_topics(settings, partitions=settings.topics.partitions)
    with pytest.raises(StartupCheckError, match="has 4") as wrong:
        await check_topics(settings, partitions=8)
    assert wrong.value.setting == "AGENTSTREAM_TOPICS__PARTITIONS"


def test_settings_are_named_by_variable_or_file_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        '# comment\n[limits]\nmax_turns = 3\n\n[llm.providers.gpt]\nkind = "openai"\n'
        'model = "m"\n[state]\nkey_prefix = "p"\n'
    )
    assert toml_line(config, ("limits", "max_turns")) == 3
    assert toml_line(config, ("llm", "providers", "gpt", "model")) == 7
    assert toml_line(config, ("llm", "providers", "gpt", "api_key")) == 5  # the table
    assert toml_line(config, ("topics", "requests")) is None
    monkeypatch.setenv("AGENTSTREAM_CONFIG_FILE", str(config))
    assert describe_setting(("limits", "max_turns"), {}) == f"{config}:3"
    env = {"AGENTSTREAM_LIMITS__MAX_TURNS": "2"}
    assert describe_setting(("limits", "max_turns"), env) == "AGENTSTREAM_LIMITS__MAX_TURNS"
    assert describe_setting(("redis_url",), {}) == "AGENTSTREAM_REDIS_URL"
    env = {"AGENTSTREAM_LLM__PROVIDERS": "{}"}
    assert describe_setting(("llm", "providers", "x", "model"), env) == (
        "AGENTSTREAM_LLM__PROVIDERS (x.model)"
    )


def test_unknown_variables_get_the_closest_known_name() -> None:
    environ = {
        "AGENTSTREAM_LIMITS__MAX_INFLIGHT": "1",
        "AGENTSTREAM_REDIS_URI": "x",
        "AGENTSTREAM_LLM__PROVIDERS__GPT__MODEL": "m",  # free-form below a dict: known
        "AGENTSTREAM_TOPICS__PARTITIONS": "4",
        "AGENTSTREAM_CONFIG_FILE": "x",
        "AGENTSTREAM_TEST_KAFKA": "x",
        "AGENTSTREAM_WHOLLY_UNRELATED_THING": "x",
        "PATH": "/bin",
    }
    assert unknown_variables(Settings, environ) == [
        ("AGENTSTREAM_LIMITS__MAX_INFLIGHT", "AGENTSTREAM_LIMITS__MAX_IN_FLIGHT"),
        ("AGENTSTREAM_REDIS_URI", "AGENTSTREAM_REDIS_URL"),
        ("AGENTSTREAM_WHOLLY_UNRELATED_THING", None),
    ]


def test_the_cli_stage_list_matches_the_topology() -> None:
    from agentstream.cli.dev import BROKER_KINDS as CLI_BROKERS
    from agentstream.cli.worker import STAGES
    from agentstream.embedded import BROKER_KINDS
    from agentstream.streams.topology import WORKER_STAGES

    assert STAGES == WORKER_STAGES  # the CLI spells them out to start fast
    assert CLI_BROKERS == BROKER_KINDS


async def test_a_client_that_fails_to_start_leaves_no_unclosed_producer(tmp_path: Path) -> None:
    import gc
    import socket
    import warnings

    from aiokafka.errors import KafkaConnectionError

    from agentstream.client import AgentClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", run_dir=tmp_path)
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = AgentClient(settings)
        with pytest.raises(KafkaConnectionError):
            await client.start()
        del client
        gc.collect()
    unclosed = [w for w in caught if "Unclosed" in str(w.message)]
    assert not unclosed
    assert not [c for c in loop_errors if "Unclosed" in str(c.get("message"))]

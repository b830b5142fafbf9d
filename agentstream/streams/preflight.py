"""Start-up checks: what a worker verifies before it joins the consumer group.

A worker that joined the group with a broken dependency would take partitions and dead-letter
its share of the traffic. So before joining it checks, in order, and stops at the first failure
with a :class:`StartupCheckError` whose one line names the setting to fix and how:

- Kafka: reachable, every pipeline topic present, each with ``topics.partitions`` partitions
  (listed through an all-topics metadata request, which creates nothing);
- Redis: ``PING``, and every Lua script the pipeline runs loads (``SCRIPT LOAD``: scripting is
  allowed for this user);
- the schema registry (when ``schema_registry_url`` is set): the contracts register; connection
  errors, 5xx and 429 are retried with jittered exponential backoff for up to
  ``startup.registry_retry_s`` before the worker gives up;
- model routes and MCP servers: checked and logged, fatal only with ``startup.require_models``
  / ``startup.require_mcp_servers``.

Settings are named as their environment variable, or ``file:line`` when the TOML file sets them
(:func:`agentstream.settings_source.describe_setting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from redis.exceptions import RedisError

from agentstream.admission import scripts as admission_scripts
from agentstream.config import Settings, TopicSettings, mask_url
from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.llm.factory import build_provider
from agentstream.observability.logging import get_logger
from agentstream.resilience import breaker
from agentstream.resilience.retry import RetryPolicy, retry_call
from agentstream.schemas.codec import AvroCodec
from agentstream.settings_source import describe_setting
from agentstream.state import context_scripts, journal, parking
from agentstream.state.redis import RedisClient
from agentstream.streams.admin import TopicAdminError, list_topics
from agentstream.streams.topology import pipeline_topics

log = get_logger(__name__)

LUA_SCRIPTS = (
    *context_scripts.SCRIPTS,
    *journal.SCRIPTS,
    *breaker.SCRIPTS,
    *admission_scripts.SCRIPTS,
    *parking.SCRIPTS,
)
_TOPIC_FIELDS = (
    "requests",
    "generation",
    "tool_calls",
    "responses",
    "errors",
    "metrics",
    # longest first: agent.approval-decisions is not a sub-topic of agent.approvals
    "approval_decisions",
    "approval_audit",
    "approvals",
    "delegation_results",
)
_SHOWN = 3


class StartupCheckError(AgentStreamError):
    """A dependency failed its start-up check; the message is one line naming the setting."""

    code = ErrorCode.STARTUP_CHECK_FAILED

    def __init__(self, problem: str, *, setting: str, fix: str) -> None:
        super().__init__(f"{problem} [{setting}]; {fix}")
        self.setting = setting


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    lines = str(exc).strip().splitlines()
    text = lines[0].removeprefix(f"{name}: ") if lines else ""
    return f"{name}: {text}" if text else name


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a library's own error lines while a check reports the failure itself."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


def _names(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


# --- Kafka ------------------------------------------------------------------------------------


async def kafka_topics(settings: Settings) -> dict[str, int]:
    """The cluster's topics and partition counts, or a StartupCheckError naming the brokers."""
    setting = describe_setting(("kafka_bootstrap_servers",))
    servers = settings.kafka_bootstrap_servers
    if not servers:
        raise StartupCheckError(
            "no Kafka brokers configured",
            setting=setting,
            fix="set it to host:port[,host:port], or run `agentstream dev` for a local stack",
        )
    timeout_s = settings.startup.check_timeout_s
    quick = settings.model_copy(
        update={"timeouts": settings.timeouts.model_copy(update={"kafka_request_s": timeout_s})}
    )
    try:
        with _quiet("aiokafka"):
            async with asyncio.timeout(timeout_s):
                return await list_topics(quick)
    except (TopicAdminError, TimeoutError) as exc:
        cause = exc.__cause__ or exc
        raise StartupCheckError(
            f"cannot reach Kafka at {mask_url(servers)} ({_reason(cause)})",
            setting=setting,
            fix="point it at running brokers (check AGENTSTREAM_KAFKA_SECURITY_PROTOCOL too)",
        ) from exc


def _topic_setting(settings: Settings, topic: str) -> str:
    for field in TopicSettings.name_fields():
        base = getattr(settings.topics, field)
        if topic == base or topic.startswith(f"{base}."):
            return describe_setting(("topics", field))
    return "AGENTSTREAM_TOPICS__*"


async def check_topics(
    settings: Settings,
    topics: list[str] | None = None,
    *,
    partitions: int | None = None,
    named_by: str | None = None,
) -> None:
    """Kafka is reachable and ``topics`` (default: every pipeline topic) exist, with
    ``partitions`` partitions each when given. ``named_by`` says where the names came from
    when not from the topic settings (a command-line argument)."""
    wanted = list(dict.fromkeys(pipeline_topics(settings) if topics is None else topics))
    existing = await kafka_topics(settings)
    missing = [t for t in wanted if t not in existing]
    if missing:
        raise StartupCheckError(
            f"{len(missing)} topic(s) missing on Kafka: {_names(missing)}",
            setting=named_by or _topic_setting(settings, missing[0]),
            fix="create them with `agentstream topics create`, or fix the topic name",
        )
    if partitions is None:
        return
    wrong = [t for t in wanted if existing[t] != partitions]
    if wrong:
        counts = _names(f"{t} has {existing[t]}" for t in wrong)
        raise StartupCheckError(
            f"topic partitions differ from the {partitions} configured: {counts}",
            setting=describe_setting(("topics", "partitions")),
            fix="set it to the topics' partition count, or recreate the topics",
        )


# --- Redis ------------------------------------------------------------------------------------


async def check_redis(redis: RedisClient, settings: Settings) -> None:
    """``PING``, then ``SCRIPT LOAD`` of every Lua script the pipeline runs."""
    setting = describe_setting(("redis_url",))
    url = mask_url(settings.redis_url or "")
    timeout_s = settings.startup.check_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        raise StartupCheckError(
            f"cannot reach Redis at {url} ({_reason(exc)})",
            setting=setting,
            fix="point it at a running Redis (redis://[:password@]host:port/db)",
        ) from exc
    try:
        async with asyncio.timeout(timeout_s):
            for script in LUA_SCRIPTS:
                await redis.script_load(script)
    except (RedisError, OSError, TimeoutError) as exc:
        raise StartupCheckError(
            f"Redis at {url} does not load the pipeline's Lua scripts ({_reason(exc)})",
            setting=setting,
            fix="allow EVALSHA and SCRIPT for this user (ACL), or use a Redis with scripting",
        ) from exc


# --- schema registry --------------------------------------------------------------------------


async def prepare_codec(codec: AvroCodec, settings: Settings) -> None:
    """Register the contracts; transient registry failures are retried with backoff for up to
    ``startup.registry_retry_s``."""
    if not settings.schema_registry_url:
        await codec.prepare()
        return
    policy = RetryPolicy(
        max_attempts=1_000_000,
        base_delay_s=0.5,
        max_delay_s=5.0,
        max_total_s=settings.startup.registry_retry_s,
    )
    url = mask_url(settings.schema_registry_url)
    try:
        await retry_call(codec.prepare, policy, operation="schema registry")
    except AgentStreamError as exc:
        if exc.retriable:
            waited = f"{settings.startup.registry_retry_s:g}"
            raise StartupCheckError(
                f"schema registry {url} unavailable after {waited}s of retries ({_reason(exc)})",
                setting=describe_setting(("schema_registry_url",)),
                fix="check the registry is up and the URL is right "
                "(AGENTSTREAM_STARTUP__REGISTRY_RETRY_S sets how long to wait)",
            ) from exc
        raise StartupCheckError(
            f"schema registry {url} rejected the contracts ({_reason(exc)})",
            setting=describe_setting(("schema_registry_username",)),
            fix="check the registry credentials and the subjects' compatibility settings",
        ) from exc


# --- model routes and MCP servers -------------------------------------------------------------


async def _provider_healthy(name: str, settings: Settings) -> bool:
    client = build_provider(name, settings.llm.providers[name], settings)
    try:
        async with asyncio.timeout(settings.startup.check_timeout_s):
            return await client.health_check()
    except TimeoutError:
        return False
    finally:
        await client.aclose()


def _routes(settings: Settings) -> dict[str, list[str]]:
    llm = settings.llm
    routes = {name: list(chain) for name, chain in llm.routes.items()}
    if llm.model not in routes:
        routes[llm.model] = [llm.model]
    return routes


async def check_models(settings: Settings) -> dict[str, bool]:
    """Each configured provider's health check (a models listing), logged; with
    ``startup.require_models`` a route none of whose entries answers stops the worker."""
    providers = settings.llm.providers
    used = sorted({e for chain in _routes(settings).values() for e in chain if e in providers})
    healthy: dict[str, bool] = {}
    for name in used:
        healthy[name] = providers[name].kind == "local" or await _provider_healthy(name, settings)
        if healthy[name]:
            log.info("model provider answers", provider=name)
        else:
            log.warning("model provider does not answer at start", provider=name)
    for route, chain in _routes(settings).items():
        if any(healthy.get(entry, entry == "local") for entry in chain):
            continue
        if settings.startup.require_models:
            raise StartupCheckError(
                f"model route {route!r}: no provider answers ({_names(chain)})",
                setting=describe_setting(("llm", "providers", chain[0])),
                fix="check the providers' base_url and api_key, or unset "
                "AGENTSTREAM_STARTUP__REQUIRE_MODELS to start anyway",
            )
        log.warning("model route has no answering provider at start", route=route)
    return healthy


def check_mcp_servers(settings: Settings, health: list[Any]) -> None:
    """MCP servers that did not connect (``health``: the toolset's ServerHealth list) stop the
    worker with ``startup.require_mcp_servers``; otherwise the toolset already logged them."""
    down = [h for h in health if not h.connected]
    if not down or not settings.startup.require_mcp_servers:
        return
    first = down[0]
    inline = first.name in settings.tools.mcp_servers
    setting = (
        describe_setting(("tools", "mcp_servers"))
        if inline or settings.tools.mcp_servers_file is None
        else str(settings.tools.mcp_servers_file)
    )
    raise StartupCheckError(
        f"MCP server(s) not connected: {_names(h.name for h in down)} "
        f"({first.last_error or 'no answer'})",
        setting=setting,
        fix="fix the server entry or start the server, or unset "
        "AGENTSTREAM_STARTUP__REQUIRE_MCP_SERVERS to start without it",
    )

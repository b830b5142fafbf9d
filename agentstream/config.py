"""Settings: one pydantic-settings model from ``AGENTSTREAM_*`` variables and an optional TOML file.

Precedence (highest first): init arguments, environment variables, ``.env``, the TOML file named by
``AGENTSTREAM_CONFIG_FILE`` (or ``agentstream.toml`` in the working directory), defaults.
Nested groups use ``__`` in variable names, e.g. ``AGENTSTREAM_TOPICS__REQUESTS=my.requests``.
Secrets are ``SecretStr`` and :meth:`Settings.safe_dump` masks them (and passwords inside URLs).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agentstream.exceptions import ConfigError
from agentstream.settings_source import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    config_file,
    toml_error_line,
)
from agentstream.tools.settings import ToolSettings

__all__ = ["CONFIG_FILE_ENV", "DEFAULT_CONFIG_FILE", "Settings", "load_settings", "mask_url"]


class TopicSettings(BaseModel):
    """Topic names and partition counts."""

    requests: str = "agent.requests"
    generation: str = "agent.generation"
    tool_calls: str = "agent.tool-calls"
    responses: str = "agent.responses"
    errors: str = "agent.errors"
    metrics: str = "agent.metrics"
    # Answers as they are written (StreamDelta, keyed by session) and user ratings (Feedback).
    stream: str = "agent.stream"
    feedback: str = "agent.feedback"
    # Cancel requests (CancelRequest, keyed by request id): every worker reads every partition
    # of it (streams/control.py).
    control: str = "agent.control"
    # Human approval of tool calls (tools.approvals): parked calls for approvers (they carry the
    # arguments), the approvers' decisions, and one audit event per decision.
    approvals: str = "agent.approvals"
    approval_decisions: str = "agent.approval-decisions"
    approval_audit: str = "agent.approval-audit"
    # Delegation: child requests' answers for the parents waiting for them (internal)
    delegation_results: str = "agent.delegation-results"
    dlq_suffix: str = ".dlq"
    # Non-blocking retry tiers of the stages that have them (streams/topology.py):
    # <topic>.retry.<N>s, then the DLQ. Which topics the pipeline uses: topology.pipeline_topics.
    retry_tiers_s: list[float] = Field(default_factory=lambda: [5.0, 30.0, 300.0])
    partitions: int = Field(default=8, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def dlq(self, topic: str) -> str:
        return f"{topic}{self.dlq_suffix}"

    @classmethod
    def name_fields(cls) -> tuple[str, ...]:
        """The settings that name a topic (``requests``, ``generation``, ...), in order."""
        return tuple(
            name
            for name, field in cls.model_fields.items()
            if field.annotation is str and name != "dlq_suffix"
        )

    def retry_topic(self, topic: str, tier: int) -> str:
        seconds = self.retry_tiers_s[tier]
        label = f"{seconds:g}".replace(".", "_")
        return f"{topic}.retry.{label}s"


class KafkaSecurity(BaseModel):
    """Kafka client security; maps onto aiokafka's connection arguments."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None


class KafkaTuning(BaseModel):
    """Consumer-group timing. Tansu joins a group in about session_timeout/2; tests use 2 s.

    A worker killed with kill -9 holds its partitions until the group coordinator misses its
    heartbeats for ``session_timeout_s``: its sessions pause about that long plus ~1 s of rebalance
    (bench/rebalance_pause.py). 6 s is the lowest an Apache Kafka broker accepts by default
    (``group.min.session.timeout.ms``); go lower only where the broker allows it.
    """

    session_timeout_s: float = Field(default=6.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    # Longest time a fetch waits for data. Real Kafka answers early when data arrives; Tansu (the
    # embedded dev broker) does not, so the dev stack and tests lower this to 5 ms.
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # Largest record the broker accepts, used only when the broker does not report its topics'
    # max.message.bytes (or its message.max.bytes) at start-up; see streams/message_size.py.
    max_message_bytes: int = Field(default=1024 * 1024, ge=4096)
    # A worker that runs both validation and generation runs a validated request's first model
    # turn itself, instead of publishing it to the generation topic and consuming it back: one
    # produce, one consume and one broker round trip less per request (streams/runner.py,
    # "Local hand-over"). Off: every turn goes through the generation topic.
    local_handoff: bool = True


class Timeouts(BaseModel):
    """Timeouts in seconds."""

    llm_call_s: float = Field(default=60.0, gt=0)
    tool_call_s: float = Field(default=30.0, gt=0)
    kafka_request_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)


class FailureSettings(BaseModel):
    """How a stage handles an unexpected error (streams/policy.py): attempts in place with
    jittered exponential backoff, then the retry tiers (transient) or the dead-letter topic."""

    max_attempts: int = Field(default=3, ge=1)
    backoff_base_s: float = Field(default=0.1, ge=0)
    # While Redis is unreachable a worker takes no new events and each failed attempt waits up
    # to this long for Redis to answer again before the next one (streams/runner.py).
    outage_wait_s: float = Field(default=60.0, ge=0)


class Limits(BaseModel):
    """Validation and runaway-loop limits."""

    max_message_bytes: int = Field(default=32 * 1024, ge=1)
    max_metadata_entries: int = Field(default=64, ge=0)
    max_metadata_value_bytes: int = Field(default=4096, ge=1)
    max_allowed_tools: int = Field(default=64, ge=0)
    max_turns: int = Field(default=8, ge=1)
    # A model turn asking for more tool calls than this runs none of them: the model gets an
    # error result per call (of the first this many) telling it the limit, and tries again.
    max_tool_calls_per_turn: int = Field(default=32, ge=1)
    history_token_budget: int = Field(default=6000, ge=100)
    tool_concurrency: int = Field(default=8, ge=1)
    max_in_flight: int = Field(default=500, ge=1)
    double_text: Literal["queue", "reject"] = "queue"
    session_busy_timeout_s: float = Field(default=900.0, gt=0)
    # Load shedding (RESOURCE_EXHAUSTED): refuse new requests while this worker's resident
    # memory is above shed_rss_mb, or its stages hold more than shed_in_flight_ratio of their
    # in-flight capacity. Off by default.
    shed_rss_mb: float | None = Field(default=None, gt=0)
    shed_in_flight_ratio: float | None = Field(default=None, gt=0, le=1)


class StateSettings(BaseModel):
    """Redis-held state: key prefix and lifetimes."""

    # Keys are ``{key_prefix}:...``; braces would move Redis Cluster hash tags.
    key_prefix: str = Field(default="agentstream", min_length=1, pattern=r"^[^{}]+$")
    context_ttl_s: int = Field(default=3600, ge=1)
    dedupe_ttl_s: int = Field(default=24 * 3600, ge=1)
    # Must exceed the longest redelivery/replay window (see state/journal.py).
    journal_retention_s: int = Field(default=24 * 3600, ge=60)
    redis_max_connections: int = Field(default=64, ge=1)
    redis_pool_timeout_s: float = Field(default=10.0, gt=0)
    # Redis Cluster: how long a command keeps trying while a master fails over (state/redis.py).
    redis_cluster_failover_s: float = Field(default=10.0, ge=0)
    # One server: a command that fails on a dropped or stale pooled connection is sent again on a
    # fresh one, up to this many times with jittered exponential backoff (state/redis.py).
    redis_retries: int = Field(default=3, ge=0)
    # The session scripts of concurrent requests issued in one event-loop turn share one
    # pipeline: one write and one read instead of one per call (state/autopipe.py).
    redis_autopipeline: bool = True


class CancelSettings(BaseModel):
    """Cancellation (streams/control.py): how long a cancel request is remembered."""

    # A cancel stops its request if the request comes back within this window: from a retry
    # tier, a redelivery, a worker that started after the cancel (it reads the control topic
    # from this far back). Must exceed the longest retry tier (topics.retry_tiers_s).
    window_s: int = Field(default=3600, ge=1)


class ModelPriceSettings(BaseModel):
    """USD per one million tokens."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)


class LLMProviderSettings(BaseModel):
    """One model at one endpoint. ``openai`` covers every OpenAI-compatible server (set
    ``base_url`` for vLLM, Ollama, llama.cpp, LM Studio); ``local`` is the rule-based stand-in."""

    kind: Literal["openai", "anthropic", "local"] = "openai"
    model: str = ""
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-call timeout; default ``timeouts.llm_call_s``."""
    temperature: float | None = None
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    breaker: bool = True


class LLMRetrySettings(BaseModel):
    """Retries of one route entry: exponential backoff with full jitter, Retry-After honoured."""

    max_attempts: int = Field(default=3, ge=1)
    base_delay_s: float = Field(default=0.5, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_total_s: float = Field(default=30.0, ge=0)


class BreakerSettings(BaseModel):
    """Circuit breakers (state shared by all workers through Redis). ``failure_threshold``
    consecutive provider failures open one: timeouts, connection errors, 5xx, 529, 429; a
    malformed answer or a refused (4xx) request is that request's error and never counts."""

    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    recovery_timeout_s: float = Field(default=30.0, gt=0)
    half_open_max_probes: int = Field(default=1, ge=1)
    half_open_successes: int = Field(default=1, ge=1)
    probe_timeout_s: float = Field(default=60.0, gt=0)


class LLMSettings(BaseModel):
    """Model selection. ``local`` is the rule-based offline stand-in (not a language model).

    ``model`` names the default route: a key of ``routes``, a key of ``providers`` (a route of
    one), or ``local``. A route is an ordered fallback chain of provider names (``local`` is
    always available). ``tenant_routes`` maps tenant ids to routes; with ``request_routes`` a
    request's ``metadata["model"]`` may name any configured route. For example (TOML)::

        [llm]
        model = "main"
        routes = { main = ["gpt", "claude", "local"], cheap = ["vllm", "local"] }
        tenant_routes = { acme = "cheap" }
        [llm.providers.gpt]
        kind = "openai"
        model = "gpt-4o-mini"          # api_key from OPENAI_API_KEY unless set here
        [llm.providers.claude]
        kind = "anthropic"
        model = "claude-sonnet-4-5"
        [llm.providers.vllm]
        kind = "openai"
        model = "Qwen/Qwen2.5-7B-Instruct"
        base_url = "http://vllm:8000/v1"
        [llm.prices."gpt-4o-mini"]
        input_per_mtok = 0.15
        output_per_mtok = 0.60
    """

    model: str = "local"
    system_prompt: str = "You are a helpful assistant. Use tools when they help."
    local_latency_s: float = Field(default=0.0, ge=0)
    local_failure_rate: float = Field(default=0.0, ge=0, le=1)
    local_seed: int = 0
    providers: dict[str, LLMProviderSettings] = Field(default_factory=dict)
    routes: dict[str, list[str]] = Field(default_factory=dict)
    tenant_routes: dict[str, str] = Field(default_factory=dict)
    request_routes: bool = True
    prices: dict[str, ModelPriceSettings] = Field(default_factory=dict)
    retry: LLMRetrySettings = LLMRetrySettings()
    breaker: BreakerSettings = BreakerSettings()


class AdmissionLimits(BaseModel):
    """One tenant's admission limits. ``None`` means no limit of that kind.

    Rate limits are sliding windows of ``window_s`` seconds: at most ``user_requests`` requests
    per user and ``tenant_requests`` per tenant in any window, and likewise for LLM tokens
    (estimated before each model call, corrected to the actual usage after it). Budgets count
    per tenant and UTC day.
    """

    window_s: float = Field(default=60.0, gt=0)
    user_requests: int | None = Field(default=None, ge=1)
    tenant_requests: int | None = Field(default=None, ge=1)
    user_tokens: int | None = Field(default=None, ge=1)
    tenant_tokens: int | None = Field(default=None, ge=1)
    daily_tokens: int | None = Field(default=None, ge=0)
    daily_cost_usd: float | None = Field(default=None, ge=0)


class AdmissionSettings(BaseModel):
    """Rate limits, budgets and the response cache (``agentstream.admission``).

    ``tenants`` overrides ``defaults`` per tenant, field by field (a field the override does not
    set keeps the default). When Redis cannot be reached, rate limits ``allow`` (fail open, with
    a warning metric) and budgets ``deny`` (fail closed) unless configured otherwise.
    """

    enabled: bool = True
    defaults: AdmissionLimits = AdmissionLimits()
    tenants: dict[str, AdmissionLimits] = Field(default_factory=dict)
    rate_limit_on_redis_error: Literal["allow", "deny"] = "allow"
    budget_on_redis_error: Literal["allow", "deny"] = "deny"
    redis_timeout_s: float = Field(default=1.0, gt=0)
    # Actual usage is booked behind the calls, batched per tenant, at most this late
    # (admission/usage_writer.py); a batch Redis refuses stays queued and is tried again.
    usage_flush_s: float = Field(default=0.05, gt=0)
    completion_token_estimate: int = Field(default=256, ge=0)
    # Opt-in: an answer built from time-sensitive read-only tools (current time, prices) would
    # be served stale for up to cache_ttl_s; enable where answers are stable enough.
    cache_enabled: bool = False
    cache_ttl_s: int = Field(default=300, ge=1)
    cache_bucket_s: int = Field(default=3600, ge=1)
    cache_min_confidence: float = Field(default=0.8, ge=0, le=1)


class HealthSettings(BaseModel):
    """Worker health (``/livez``, ``/readyz``, ``/healthz`` on the metrics port) and the lag
    gauge; see docs/operations.md."""

    probe_interval_s: float = Field(default=2.0, gt=0)
    """How often Redis is PINGed and breaker states are read."""
    redis_timeout_s: float = Field(default=1.0, gt=0)
    """A PING that takes longer marks Redis unreachable (the worker is not ready)."""
    loop_stall_s: float = Field(default=30.0, gt=0)
    """The event loop is unresponsive (not live) when its heartbeat is older than this."""
    wedged_after_s: float = Field(default=600.0, gt=0)
    """A stage holding events that finished none for this long is wedged (not live)."""
    lag_interval_s: float = Field(default=10.0, gt=0)
    """How often the consumer lag of this worker's partitions is read (and the budget gauge)."""


class DegradationSettings(BaseModel):
    """Switches an operator flips during an incident (answers on these paths are degraded)."""

    disable_tools: bool = False
    """Offer no tools to the model; tool-call batches are answered with an error result."""
    force_fallback: bool = False
    """Skip each route's primary model and serve from its fallbacks."""
    cached_only: bool = False
    """Answer only from the response cache; a miss gets a SERVICE_DEGRADED response."""


class StreamingSettings(BaseModel):
    """Token streaming to ``topics.stream`` (processors/streaming.py).

    ``default`` applies to requests that do not say (``AgentRequest.stream`` null); it is the
    default agent's setting until agents carry their own. Deltas of one model call are
    coalesced: a record goes out when ``flush_interval_ms`` passed since the first text it
    holds, or when it holds ``flush_tokens`` provider deltas (about one token each), whichever
    comes first; the first text of an attempt goes out at once (time to first delta).
    """

    default: bool = False
    flush_interval_ms: float = Field(default=50.0, gt=0)
    flush_tokens: int = Field(default=64, ge=1)


class StartupSettings(BaseModel):
    """Checks a worker runs before it joins the consumer group (streams/preflight.py).

    Kafka (reachable, every pipeline topic present with ``topics.partitions`` partitions), Redis
    (PING, the Lua scripts load) and the schema registry (transient errors retried with backoff
    for up to ``registry_retry_s``) are always fatal. Model routes and MCP servers are checked
    and reported; they stop the worker only with ``require_models`` / ``require_mcp_servers``
    (otherwise a route falls back and a server keeps reconnecting in the background).
    """

    checks: bool = True
    check_timeout_s: float = Field(default=10.0, gt=0)
    registry_retry_s: float = Field(default=60.0, ge=0)
    require_models: bool = False
    require_mcp_servers: bool = False


class AgentSettings(BaseModel):
    """The agent catalog (``agentstream.agents``; docs/agents.md). Agents come from ``dir`` (one
    ``.toml``, ``.yaml`` or ``.yml`` file per agent), from ``modules`` (``pkg.mod`` takes every
    ``Agent`` at the module's top level, ``pkg.mod:attr`` one ``Agent`` or a list of them) and,
    with ``entry_points``, from the ``agentstream.agents`` entry point group. ``default`` names
    the agent of requests that name none; ``default`` itself is today's behaviour built from
    these settings (``llm.system_prompt``, every tool, the ``limits``) unless the catalog
    defines an agent of that name."""

    dir: Path | None = None
    modules: list[str] = Field(default_factory=list)
    entry_points: bool = True
    default: str = "default"


class Settings(BaseSettings):
    """All agentstream settings."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    env: Literal["dev", "production"] = "dev"
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    run_dir: Path = Path(".agentstream")

    kafka_bootstrap_servers: str | None = None
    kafka_security: KafkaSecurity = KafkaSecurity()
    # Flat aliases for the most common security settings, so plain variables work too.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    redis_url: str | None = None
    # Prometheus /metrics for `agentstream worker` (and `dev`); off when unset.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # OpenTelemetry SDK set up by `agentstream worker` (observability/otel.py): spans exported
    # over OTLP (the standard OTEL_EXPORTER_OTLP_* variables apply) or printed; off by default.
    otel_exporter: Literal["none", "otlp", "console"] = "none"
    # Registry subject naming: "topic" = TopicNameStrategy, "<topic>-value" (Confluent's
    # default); "record" = RecordNameStrategy, the record's full name. docs/contract.md.
    schema_registry_subjects: Literal["topic", "record"] = "topic"

    consumer_group: str = "agentstream"
    kafka: KafkaTuning = KafkaTuning()
    topics: TopicSettings = TopicSettings()
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    failure: FailureSettings = FailureSettings()
    state: StateSettings = StateSettings()
    llm: LLMSettings = LLMSettings()
    admission: AdmissionSettings = AdmissionSettings()
    degradation: DegradationSettings = DegradationSettings()
    health: HealthSettings = HealthSettings()
    tools: ToolSettings = ToolSettings()
    startup: StartupSettings = StartupSettings()
    streaming: StreamingSettings = StreamingSettings()
    agents: AgentSettings = AgentSettings()
    cancel: CancelSettings = CancelSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml = _toml_source(settings_cls)
        if toml is not None:
            sources.append(toml)
        sources.append(file_secret_settings)
        return tuple(sources)

    def effective_security(self) -> KafkaSecurity:
        """The nested security group with the flat ``AGENTSTREAM_KAFKA_*`` aliases applied."""
        overrides: dict[str, Any] = {
            "security_protocol": self.kafka_security_protocol,
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_username": self.kafka_sasl_username,
            "sasl_password": self.kafka_sasl_password,
            "ssl_cafile": self.kafka_ssl_cafile,
            "ssl_certfile": self.kafka_ssl_certfile,
            "ssl_keyfile": self.kafka_ssl_keyfile,
        }
        present = {k: v for k, v in overrides.items() if v is not None}
        return self.kafka_security.model_copy(update=present)

    def safe_dump(self) -> dict[str, Any]:
        """A JSON-able view with every secret masked (for ``agentstream config`` and logs)."""
        data = self.model_dump(mode="json")  # SecretStr dumps as '**********'
        for key in ("redis_url", "schema_registry_url", "kafka_bootstrap_servers"):
            if isinstance(data.get(key), str):
                data[key] = mask_url(data[key])
        return data


def _toml_source(settings_cls: type[BaseSettings]) -> TomlConfigSettingsSource | None:
    """The config file's source; a file named by ``AGENTSTREAM_CONFIG_FILE`` must exist, and a
    malformed file is a :class:`ConfigError` naming its line."""
    path, named = config_file()
    if not path.is_file():
        if named:
            raise ConfigError(
                f"{CONFIG_FILE_ENV}={path}: no such file; fix the path or unset {CONFIG_FILE_ENV}"
            )
        return None
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        line = toml_error_line(str(exc))
        where = f"{path}:{line}" if line is not None else str(path)
        reason = str(exc).split(" (at line")[0]
        raise ConfigError(f"{where}: malformed TOML ({reason}); fix the file") from exc


def mask_url(url: str) -> str:
    """Replace the password part of a URL with ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)

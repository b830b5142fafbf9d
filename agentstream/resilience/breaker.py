"""Circuit breakers whose state lives in Redis, so every worker sees the same breaker.

One breaker per key (``openai:gpt-4o-mini``, ``tools:github``). States:

- **closed**: calls pass; ``failure_threshold`` consecutive failures (counted across all workers,
  a success resets the count) open it.
- **open**: calls fail fast with :class:`CircuitOpenError` (``retry_after_s`` = time left) until
  ``recovery_timeout_s`` has passed since it opened; then the next caller moves it to half-open.
- **half-open**: at most ``half_open_max_probes`` calls are in flight at once (across workers);
  ``half_open_successes`` successful probes close it, one failed probe opens it again. A probe
  whose worker died is forgotten after ``probe_timeout_s`` so the breaker cannot stick.

What counts as a failure is the error's to say (:func:`counts_as_failure`: the project error's
``counts_for_breaker``): timeouts, connection failures, 5xx, overload and rate limits say the
dependency is unhealthy. A malformed answer, a bad request or a passed request deadline are that
one call's business (a call that ended with one counts as a success: the dependency answered),
so one user whose prompts lead a model into bad output cannot open the breaker for everyone.
The breaker remembers the code of the last failure it counted; a refusal
(:class:`CircuitOpenError`) carries it as ``cause_code``.

Every transition happens inside one Lua script (atomic on the Redis server) and uses the Redis
server's clock, so workers with skewed clocks agree. Each transition bumps a ``generation``; a
call reports its outcome with the generation it started in, and reports from an older generation
are ignored (a slow call that started before the breaker opened cannot close it, and cannot count
twice against it).

Key layout: ``{namespace}:breaker:{key}`` (a hash; the key percent-encoded; field ``c`` holds
the last counted failure's code), refreshed to ``state_ttl_s`` on each write; an absent key means
closed. If Redis cannot be reached the breaker fails OPEN in the permissive sense: calls are let
through (logged once per outage) because Redis trouble says nothing about the provider's health.

Costs: one script call before and one after each protected call (two round trips).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from redis.exceptions import RedisError

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, ConfigError
from agentstream.observability.logging import get_logger
from agentstream.resilience.exceptions import CircuitOpenError
from agentstream.state.keys import key_part
from agentstream.state.redis import RedisClient

T = TypeVar("T")
log = get_logger(__name__)

State = Literal["closed", "open", "half_open"]

# KEYS[1] hash; ARGV: recovery_ms, max_probes, probe_timeout_ms, ttl_ms
# returns {allowed 0/1, state, generation, retry_after_ms, cause ('' when unknown)}
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local recovery = tonumber(ARGV[1])
local max_probes = tonumber(ARGV[2])
local probe_timeout = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 's', 'oa', 'hp', 'ha', 'g', 'c')
local s = h[1] or 'closed'
local g = tonumber(h[5] or '0')
local c = h[6] or ''
if s == 'closed' then
  return {1, s, g, 0, c}
end
local hp = tonumber(h[3] or '0')
local ha = tonumber(h[4] or '0')
if s == 'open' then
  local wait = tonumber(h[2] or '0') + recovery - now
  if wait > 0 then
    return {0, s, g, wait, c}
  end
  g = g + 1
  s = 'half_open'
  hp = 0
  ha = now
  redis.call('HSET', KEYS[1], 's', s, 'hp', 0, 'hs', 0, 'ha', now, 'g', g)
end
if now - ha >= probe_timeout then
  hp = 0
  ha = now
  redis.call('HSET', KEYS[1], 'hp', 0, 'ha', now)
end
if hp < max_probes then
  redis.call('HSET', KEYS[1], 'hp', hp + 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1, s, g, 0, c}
end
local wait = ha + probe_timeout - now
if wait > recovery then
  wait = recovery
end
return {0, s, g, wait, c}
"""

# KEYS[1] hash; ARGV: outcome (success|failure|release), generation, threshold, successes, ttl_ms,
# cause (the failure's code, kept in field c)
# returns {state, generation, changed 0/1}
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local outcome = ARGV[1]
local h = redis.call('HMGET', KEYS[1], 's', 'f', 'hp', 'hs', 'g')
local s = h[1] or 'closed'
local g = tonumber(h[5] or '0')
if tonumber(ARGV[2]) ~= g then
  return {s, g, 0}
end
if s == 'closed' then
  local f = tonumber(h[2] or '0')
  if outcome == 'success' then
    if f > 0 then
      redis.call('HSET', KEYS[1], 'f', 0)
    end
    return {s, g, 0}
  end
  if outcome ~= 'failure' then
    return {s, g, 0}
  end
  f = f + 1
  if f >= tonumber(ARGV[3]) then
    g = g + 1
    redis.call('HSET', KEYS[1], 's', 'open', 'oa', now, 'f', 0, 'hp', 0, 'hs', 0, 'g', g,
      'c', ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {'open', g, 1}
  end
  redis.call('HSET', KEYS[1], 's', s, 'f', f, 'g', g, 'c', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {s, g, 0}
end
if s == 'half_open' then
  local hp = tonumber(h[3] or '0') - 1
  if hp < 0 then
    hp = 0
  end
  if outcome == 'failure' then
    g = g + 1
    redis.call('HSET', KEYS[1], 's', 'open', 'oa', now, 'hp', 0, 'hs', 0, 'g', g, 'c', ARGV[6])
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {'open', g, 1}
  end
  if outcome == 'release' then
    redis.call('HSET', KEYS[1], 'hp', hp)
    return {s, g, 0}
  end
  local hs = tonumber(h[4] or '0') + 1
  if hs >= tonumber(ARGV[4]) then
    g = g + 1
    redis.call('HSET', KEYS[1], 's', 'closed', 'f', 0, 'hp', 0, 'hs', 0, 'g', g)
    redis.call('PEXPIRE', KEYS[1], ARGV[5])
    return {'closed', g, 1}
  end
  redis.call('HSET', KEYS[1], 'hp', hp, 'hs', hs)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {s, g, 0}
end
return {s, g, 0}
"""


@dataclass(frozen=True, kw_only=True)
class BreakerConfig:
    failure_threshold: int = 5
    recovery_timeout_s: float = 30.0
    half_open_max_probes: int = 1
    half_open_successes: int = 1
    probe_timeout_s: float = 60.0
    state_ttl_s: float = 24 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerConfig:
        """The breaker settings shared by model routes and tool servers (``llm.breaker``)."""
        b = settings.llm.breaker
        return cls(
            failure_threshold=b.failure_threshold,
            recovery_timeout_s=b.recovery_timeout_s,
            half_open_max_probes=b.half_open_max_probes,
            half_open_successes=b.half_open_successes,
            probe_timeout_s=b.probe_timeout_s,
        )

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigError("breaker failure_threshold must be >= 1")
        if self.half_open_max_probes < 1 or self.half_open_successes < 1:
            raise ConfigError("breaker half_open_max_probes and half_open_successes must be >= 1")
        if self.recovery_timeout_s <= 0 or self.probe_timeout_s <= 0 or self.state_ttl_s <= 0:
            raise ConfigError("breaker timeouts must be > 0")


@dataclass(frozen=True, kw_only=True)
class Permit:
    """Leave to make one call; hand it back with :meth:`CircuitBreaker.record`."""

    key: str
    state: State
    generation: int
    tracked: bool = True
    """False when Redis was unreachable: the outcome is not recorded."""


@dataclass(frozen=True, kw_only=True)
class BreakerSnapshot:
    key: str
    state: State
    failures: int
    generation: int
    probes_in_flight: int
    opened_at_ms: int | None
    last_failure: str | None = None
    """Code of the last failure the breaker counted (what opened it, when open)."""


def counts_as_failure(exc: BaseException) -> bool:
    """Errors that say the dependency is unhealthy, as the error's class says
    (``counts_for_breaker``): timeouts, 5xx, overload, rate limits, connection failures. Bad
    requests and malformed answers say it is up (they are one call's error); an expired request
    deadline or an open breaker says nothing about it; an error that is not a project error is
    not classified, so not counted."""
    return isinstance(exc, AgentStreamError) and exc.counts_for_breaker


def failure_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, AgentStreamError) else type(exc).__name__


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CircuitBreaker:
    """A Redis-backed circuit breaker for one key; cheap to create (scripts are cached)."""

    def __init__(
        self,
        redis: RedisClient,
        key: str,
        config: BreakerConfig | None = None,
        *,
        namespace: str = "agentstream",
        is_failure: Callable[[BaseException], bool] = counts_as_failure,
    ) -> None:
        self.key = key
        self.config = config or BreakerConfig()
        self.redis_key = f"{namespace}:breaker:{key_part(key)}"
        self.is_failure = is_failure
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._record = redis.register_script(_RECORD)
        self._redis_down_since: float | None = None

    async def acquire(self) -> Permit:
        """A permit to call, or :class:`CircuitOpenError` when the breaker refuses."""
        c = self.config
        try:
            allowed, state, generation, wait_ms, cause = await self._acquire(
                keys=[self.redis_key],
                args=[
                    int(c.recovery_timeout_s * 1000),
                    c.half_open_max_probes,
                    int(c.probe_timeout_s * 1000),
                    int(c.state_ttl_s * 1000),
                ],
            )
        except RedisError as exc:
            self._redis_failed(exc)
            return Permit(key=self.key, state="closed", generation=-1, tracked=False)
        self._redis_ok()
        state_name: State = _text(state)  # type: ignore[assignment]
        if not int(allowed):
            raise CircuitOpenError(
                self.key,
                state=state_name,
                retry_after_s=max(0.0, int(wait_ms) / 1000.0),
                cause_code=_text(cause) or None,
            )
        return Permit(key=self.key, state=state_name, generation=int(generation))

    async def record(
        self,
        permit: Permit,
        outcome: Literal["success", "failure", "release"],
        *,
        cause: str | None = None,
    ) -> State | None:
        """Report how the permitted call went; returns the state after it (None if untracked).

        ``release`` gives a half-open probe slot back without a verdict (e.g. cancellation).
        ``cause`` is a failure's error code: refusals name the last one (``cause_code``).
        """
        if not permit.tracked:
            return None
        c = self.config
        try:
            state, generation, changed = await self._record(
                keys=[self.redis_key],
                args=[
                    outcome,
                    permit.generation,
                    c.failure_threshold,
                    c.half_open_successes,
                    int(c.state_ttl_s * 1000),
                    cause or "",
                ],
            )
        except RedisError as exc:
            self._redis_failed(exc)
            return None
        self._redis_ok()
        new_state: State = _text(state)  # type: ignore[assignment]
        if int(changed):
            log.warning(
                "circuit breaker changed state",
                breaker=self.key,
                state=new_state,
                generation=int(generation),
                cause=cause if new_state == "open" else None,
            )
        return new_state

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` through the breaker: acquire, call, record the outcome."""
        permit = await self.acquire()
        try:
            result = await fn()
        except BaseException as exc:
            if isinstance(exc, Exception):
                if self.is_failure(exc):
                    await self.record(permit, "failure", cause=failure_code(exc))
                else:  # the dependency answered; the error is this call's own
                    await self.record(permit, "success")
            elif permit.state == "half_open":  # cancelled or interrupted: no verdict
                await self.record(permit, "release")
            raise
        await self.record(permit, "success")
        return result

    async def snapshot(self) -> BreakerSnapshot:
        """The shared state as Redis holds it now (for status displays and tests)."""
        raw = await self._redis.hmget(self.redis_key, ["s", "f", "g", "hp", "oa", "c"])
        s, f, g, hp, oa, cause = (None if v is None else _text(v) for v in raw)
        state: State = s or "closed"  # type: ignore[assignment]
        return BreakerSnapshot(
            key=self.key,
            state=state,
            failures=int(f or 0),
            generation=int(g or 0),
            probes_in_flight=int(hp or 0),
            opened_at_ms=int(oa) if oa else None,
            last_failure=cause or None,
        )

    async def reset(self) -> None:
        """Forget the shared state (the breaker is closed for everyone)."""
        await self._redis.delete(self.redis_key)

    def _redis_failed(self, exc: RedisError) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning(
                "circuit breaker state unreachable; letting calls through",
                breaker=self.key,
                error=type(exc).__name__,
            )

    def _redis_ok(self) -> None:
        if self._redis_down_since is not None:
            log.info(
                "circuit breaker state reachable again",
                breaker=self.key,
                after_s=round(time.monotonic() - self._redis_down_since, 1),
            )
            self._redis_down_since = None


class BreakerRegistry:
    """One :class:`CircuitBreaker` per key over a shared Redis client and config."""

    def __init__(
        self,
        redis: RedisClient,
        config: BreakerConfig | None = None,
        *,
        namespace: str = "agentstream",
    ) -> None:
        self.redis = redis
        self.config = config or BreakerConfig()
        self.namespace = namespace
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                self.redis, key, config or self.config, namespace=self.namespace
            )
            self._breakers[key] = breaker
        return breaker


#: Every Lua script the shared breaker runs (start-up checks load them).
SCRIPTS: tuple[str, ...] = (_ACQUIRE, _RECORD)

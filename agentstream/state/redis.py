"""The shared async Redis client: one server, or a Redis Cluster.

``redis_url`` names either one server (``redis://`` / ``rediss://``, redis-py's URL form) or a
cluster: ``redis+cluster://[user:password@]host:port[,host:port...]/`` (``rediss+cluster://`` for
TLS). For a cluster the listed nodes are only where discovery starts; the client learns the slot
map from them (``CLUSTER SLOTS``) and follows ``MOVED``/``ASK`` redirections, refreshing the map
after connection errors (a failover). List several nodes so that start-up works while one is down.

One server: one blocking connection pool per worker. With hundreds of sessions in flight, callers
wait for a free connection (up to ``state.redis_pool_timeout_s``) instead of failing, and the
number of connections stays bounded (``state.redis_max_connections``). redis-py's cluster client
has no blocking pool (it raises ``MaxConnectionsError`` once a node has
``max_connections``), so :class:`GatedRedisCluster` bounds the commands in flight instead: at most
``redis_max_connections`` at a time, each using at most one connection per node; callers wait for
a turn up to ``redis_pool_timeout_s``.

Transactions (``MULTI``) are not used: on a cluster they would need every key in one slot. Every
Lua script's keys share a hash tag (see state/keys.py, admission/keys.py). Non-transactional
pipelines may span slots: the cluster client splits them per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentstream.config import Settings
from agentstream.exceptions import ConfigError

RedisClient: TypeAlias = Redis | RedisCluster
"""What every module that keeps state in Redis takes: a single-server or a cluster client."""

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_HEALTH_CHECK_INTERVAL_S = 30
_DEFAULT_PORT = 6379
_FAILOVER_BACKOFF_S = (0.05, 0.5)  # first pause, longest pause
_RECONNECT_BACKOFF_S = (0.05, 1.0)  # base, cap of the pool's reconnect retries

# Set while a task holds a turn of the gate, so commands issued from inside one (a pipeline
# re-sending redirected commands one by one) do not wait for a second turn.
_IN_GATE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "agentstream_in_gate", default=False
)


_OUTAGE_ERRORS = (
    RedisConnectionError,  # refused, reset, closed, still loading its data set, no pool slot
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,  # a replica promoted while clients still write to the old master
)


def redis_outage(error: BaseException) -> bool:
    """The error (or one it was raised from) says Redis cannot be reached right now."""
    seen: BaseException | None = error
    for _ in range(8):  # a short chain: a stage error raised from a Redis error
        if seen is None:
            return False
        if isinstance(seen, _OUTAGE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def redis_from_settings(settings: Settings) -> RedisClient:
    if not settings.redis_url:
        raise ConfigError("AGENTSTREAM_REDIS_URL is not set (the dev stack fills it in)")
    extra: dict[str, Any] = {}
    if is_cluster_url(settings.redis_url):
        extra["failover_s"] = settings.state.redis_cluster_failover_s
    else:
        extra["retries"] = settings.state.redis_retries
    return redis_from_url(
        settings.redis_url,
        max_connections=settings.state.redis_max_connections,
        pool_timeout_s=settings.state.redis_pool_timeout_s,
        **extra,
    )


def redis_from_url(
    url: str,
    *,
    max_connections: int = 64,
    pool_timeout_s: float = 10.0,
    retries: int = 3,
    **kwargs: Any,
) -> RedisClient:
    """A client for ``url`` (see the module docstring); ``kwargs`` go to the connections.

    One server: a command that fails with a connection error (a pooled connection the server
    closed, a restart) is sent again on a fresh connection up to ``retries`` times, after a
    jittered exponential pause (50 ms doubling, at most 1 s), before the caller sees the error.
    Only connection errors are retried, not timeouts: a command that timed out may have run."""
    if is_cluster_url(url):
        return cluster_from_url(
            url, max_connections=max_connections, pool_timeout_s=pool_timeout_s, **kwargs
        )
    base, cap = _RECONNECT_BACKOFF_S
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        retry=Retry(
            ExponentialWithJitterBackoff(base=base, cap=cap),
            retries,
            supported_errors=(RedisConnectionError,),
        ),
        **kwargs,
    )
    return Redis(connection_pool=pool, decode_responses=False)


def cluster_from_url(
    url: str,
    *,
    max_connections: int = 64,
    pool_timeout_s: float = 10.0,
    failover_s: float = 10.0,
    **kwargs: Any,
) -> GatedRedisCluster:
    parts = urlsplit(url)
    scheme = "rediss" if parts.scheme.lower().startswith("rediss") else "redis"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    addresses = [h.strip() for h in hosts.split(",") if h.strip()]
    if not addresses:
        raise ConfigError(
            f"AGENTSTREAM_REDIS_URL names no cluster node ({scheme}+cluster://host:port,...)"
        )
    nodes = []
    for address in addresses:
        node = urlsplit(f"//{address}")
        try:
            port = node.port or _DEFAULT_PORT
        except ValueError as exc:
            raise ConfigError(f"AGENTSTREAM_REDIS_URL: bad cluster node {address!r}") from exc
        nodes.append(ClusterNode(node.hostname or "localhost", port))
    # Connection options (credentials, TLS, query string) as redis-py reads them for one node.
    netloc = f"{userinfo}@{addresses[0]}" if userinfo else addresses[0]
    first = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    options: dict[str, Any] = dict(parse_url(first))
    for key in ("host", "port"):
        options.pop(key, None)
    if options.pop("db", 0) not in (0, None):
        raise ConfigError("AGENTSTREAM_REDIS_URL: a Redis Cluster has only database 0")
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    options.update(kwargs)
    return GatedRedisCluster(
        startup_nodes=nodes,
        max_connections=max_connections,
        pool_timeout_s=pool_timeout_s,
        failover_s=failover_s,
        health_check_interval=_HEALTH_CHECK_INTERVAL_S,
        decode_responses=False,
        **options,
    )


class GatedRedisCluster(RedisCluster):
    """redis-py's cluster client with at most ``max_connections`` commands in flight.

    Two work-arounds for redis-py 8.1's async cluster client:

    - it picks a command's node before it has loaded the slot map, so the first commands of a
      fresh client (and every command after a full reset) go to a random master and come back
      ``MOVED``: the slot map is loaded before each command when it is missing;
    - after ``reinitialize_steps`` ``MOVED`` replies it resets the whole client, disconnecting
      connections other tasks are using mid-command (they fail with ``AttributeError``, not a
      Redis error). ``reinitialize_steps=0``: a ``MOVED`` reply (every slot of a failed-over
      master, once) only updates that slot's owner; connection errors still reload the map.

    Its retries on connection errors follow each other without a pause, so a command to a master
    that just died fails within milliseconds, long before a replica is promoted (about
    ``cluster-node-timeout`` plus a second). Here a command (or pipeline) that fails with a
    connection error, a timeout, ``CLUSTERDOWN`` or ``TRYAGAIN`` is tried again after a pause
    (50 ms doubling to 0.5 s) for up to ``failover_s`` (``state.redis_cluster_failover_s``),
    so a failover costs the callers a wait instead of failed stage events.
    """

    def __init__(
        self, *args: Any, pool_timeout_s: float = 10.0, failover_s: float = 10.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("reinitialize_steps", 0)
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(int(kwargs.get("max_connections", 100)))
        self._pool_timeout_s = pool_timeout_s
        self._failover_s = failover_s

    async def ride_failover(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``await call()``, again after a pause while it fails as during a failover."""
        deadline = asyncio.get_running_loop().time() + self._failover_s
        pause, longest = _FAILOVER_BACKOFF_S
        while True:
            try:
                return await call()
            except MaxConnectionsError:
                raise
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError):
                if asyncio.get_running_loop().time() + pause > deadline:
                    raise
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, longest)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if _IN_GATE.get():
            yield
            return
        try:
            if self._turns.locked():  # none free: wait, bounded
                async with asyncio.timeout(self._pool_timeout_s):
                    await self._turns.acquire()
            else:  # a free turn is taken at once: no timer to arm and cancel per command
                await self._turns.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError(
                f"no Redis connection free within {self._pool_timeout_s:g}s "
                "(state.redis_max_connections)"
            ) from exc
        token = _IN_GATE.set(True)
        try:
            yield
        except SlotNotCoveredError as exc:  # not a RedisError: callers catch RedisError
            raise ClusterDownError(f"Redis Cluster: {exc}") from exc
        finally:
            _IN_GATE.reset(token)
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command

        async def once() -> Any:
            if self._initialize:
                try:
                    await self.initialize()
                except RedisClusterException as exc:  # no node reachable: not a RedisError
                    raise RedisConnectionError(f"Redis Cluster unreachable: {exc}") from exc
            return await run(*args, **kwargs)

        async with self.turn():
            return await self.ride_failover(once)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if transaction:
            raise ConfigError("agentstream uses no transactions on a Redis Cluster")
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]


class _GatedPipeline(ClusterPipeline):
    cluster_client: GatedRedisCluster

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        strategy: Any = self._execution_strategy
        queued = list(strategy._command_queue)

        async def once() -> list[Any]:
            # redis-py empties the queue after every execute, a failed one too: a retry would
            # send nothing and answer []. Put the same commands back; redis-py skips those that
            # already have a result, so only the failed ones are sent again.
            strategy._command_queue = list(queued)
            return await super(_GatedPipeline, self).execute(raise_on_error, allow_redirections)

        async with client.turn():
            return await client.ride_failover(once)  # type: ignore[no-any-return]

"""The shared async Redis client.

One blocking connection pool per worker: with hundreds of sessions in flight, callers wait for a
free connection (up to ``state.redis_pool_timeout_s``) instead of failing, and the number of
connections to Redis stays bounded (``state.redis_max_connections``).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from agentstream.config import Settings
from agentstream.exceptions import ConfigError


def redis_from_settings(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise ConfigError("AGENTSTREAM_REDIS_URL is not set (the dev stack fills it in)")
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.state.redis_max_connections,
        timeout=settings.state.redis_pool_timeout_s,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool, decode_responses=False)

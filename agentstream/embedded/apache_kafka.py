"""Apache Kafka 4 (KRaft) as child processes: one combined broker+controller node, or a cluster.

::

    with ApacheKafka(run_dir=path) as kafka:              # one node
        kafka.address                                     # "127.0.0.1:PORT"
    async with ApacheKafka(run_dir=path, nodes=3) as k:   # RF 3, min.insync.replicas=2
        k.kill_node(2); await k.restart_node_async(2)     # fault tests

Every node is broker and controller (the controller quorum is all nodes), listens on two free
loopback ports, keeps its data and log (``kafka-<id>.log``) under ``run_dir/kafka-<id>/`` and is a
:class:`ManagedProcess` (own process group, ``PR_SET_PDEATHSIG``, SIGTERM then SIGKILL, stopped at
exit). Jars come from :func:`kafka_classpath` (Maven, cached).

The broker is tuned for tests and development, not production: no initial rebalance delay,
group sessions down to 500 ms (production brokers refuse sessions below 6 s:
``group.min.session.timeout.ms``), dead brokers fenced after 3 s instead of 9 s, no topic
auto-creation, a small heap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.kafka_runtime import KAFKA_VERSION, java_binary, kafka_classpath
from agentstream.embedded.lifecycle import Lifecycle
from agentstream.embedded.process import ManagedProcess, free_port
from agentstream.embedded.server import HOST

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 3
_POLL_S = 0.1
_PROBE_TIMEOUT_S = 2.0
_FORMAT_TIMEOUT_S = 60.0

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    home: Path
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


class ApacheKafka(Lifecycle):
    """``nodes`` Apache Kafka brokers (each also a KRaft controller) on loopback ports."""

    name = "apache-kafka"

    def __init__(
        self,
        *,
        run_dir: Path,
        nodes: int = 1,
        version: str = KAFKA_VERSION,
        heap_mb: int | None = None,
        startup_timeout_s: float = 120.0,
        stop_grace_s: float = 15.0,
        extra_config: dict[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.run_dir = run_dir.resolve()
        self.node_count = nodes
        self.version = version
        self.heap_mb = heap_mb or (512 if nodes == 1 else 384)
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.extra_config = dict(extra_config or {})
        self._nodes: list[_Node] = []
        self._java: Path | None = None
        self._lib: Path | None = None

    # -- addresses and processes --------------------------------------------------------------

    @property
    def address(self) -> str:
        """Comma-separated ``host:port`` of every node (for ``kafka_bootstrap_servers``)."""
        if not self._nodes:
            raise EmbeddedStackError(f"{self.name} has not been started")
        return ",".join(node.address for node in self._nodes)

    @property
    def node_addresses(self) -> dict[int, str]:
        return {node.node_id: node.address for node in self._nodes}

    @property
    def pids(self) -> list[int]:
        return [
            n.process.pid
            for n in self._nodes
            if n.process is not None and n.process.pid is not None
        ]

    @property
    def pid(self) -> int | None:
        pids = self.pids
        return pids[0] if pids else None

    @property
    def running(self) -> bool:
        return any(n.process is not None and n.process.running for n in self._nodes)

    def log_path(self, node_id: int) -> Path:
        return self._node(node_id).home / f"kafka-{node_id}.log"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Blocking start (for code without a running event loop, e.g. a pytest session fixture)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.start_async())
            return
        raise EmbeddedStackError("ApacheKafka.start() called inside an event loop: use start_async")

    async def start_async(self) -> None:
        """Resolve the jars, format storage, start every node and wait until all are registered."""
        if self.running:
            raise EmbeddedStackError(f"{self.name} is already running (pids {self.pids})")
        self._java = java_binary()
        self._lib = await asyncio.to_thread(kafka_classpath, self.version)
        started = time.monotonic()
        log.debug("%s: classpath %s", self.name, self._lib)
        for attempt in range(_PORT_ATTEMPTS):
            self._layout()
            try:
                await self._format_all()
                log.debug("%s: storage formatted in %.1fs", self.name, time.monotonic() - started)
                for node in self._nodes:
                    self._spawn(node)
                await self._wait_ready(len(self._nodes))
            except _PortLost:
                await self.stop_async()
                if attempt + 1 == _PORT_ATTEMPTS:
                    raise EmbeddedStackError(
                        f"{self.name} could not bind its ports in {_PORT_ATTEMPTS} attempts; "
                        f"logs: {self.run_dir}"
                    ) from None
                log.warning("%s lost a port race; retrying on fresh ports", self.name)
                continue
            except BaseException:
                await self.stop_async()
                raise
            log.info(
                "%s %s ready in %.1fs: %s pids=%s logs=%s",
                self.name,
                self.version,
                time.monotonic() - started,
                self.address,
                self.pids,
                self.run_dir,
            )
            return

    def stop(self) -> None:
        """SIGTERM every node at once, then wait (SIGKILL after the grace period). Idempotent."""
        live = [n.process for n in self._nodes if n.process is not None]
        for process in live:
            process.terminate()
        for process in live:
            process.stop(self.stop_grace_s)

    async def stop_async(self) -> None:
        live = [n.process for n in self._nodes if n.process is not None]
        for process in live:
            process.terminate()
        await asyncio.gather(*(p.stop_async(self.stop_grace_s) for p in live))

    def kill_node(self, node_id: int) -> None:
        """``kill -9`` one node (fault tests); its data stays for :meth:`restart_node_async`."""
        process = self._node(node_id).process
        if process is not None:
            process.kill()

    async def restart_node_async(self, node_id: int) -> None:
        """Start a killed node again on its old ports and wait until every node is registered."""
        node = self._node(node_id)
        if node.process is not None and node.process.running:
            raise EmbeddedStackError(f"kafka node {node_id} is still running")
        self._spawn(node)
        await self._wait_ready(len(self._nodes))

    # -- internals ----------------------------------------------------------------------------

    def _node(self, node_id: int) -> _Node:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise EmbeddedStackError(f"no kafka node {node_id} (nodes: {list(self.node_addresses)})")

    def _layout(self) -> None:
        """Fresh ports and empty data folders for every node; writes the configuration files."""
        ports: set[int] = set()
        while len(ports) < 2 * self.node_count:
            ports.add(free_port(HOST))
        pairs = sorted(ports)
        self._nodes = []
        for index in range(self.node_count):
            node_id = index + 1
            home = self.run_dir / f"kafka-{node_id}"
            shutil.rmtree(home / "data", ignore_errors=True)
            home.mkdir(parents=True, exist_ok=True)
            self._nodes.append(_Node(node_id, pairs[2 * index], pairs[2 * index + 1], home))
        (self.run_dir / "kafka-log4j2.properties").write_text(_LOG4J2)
        for node in self._nodes:
            lines = [f"{key}={value}" for key, value in self._config(node).items()]
            (node.home / "server.properties").write_text("\n".join(lines) + "\n")

    def _config(self, node: _Node) -> dict[str, str]:
        n = self.node_count
        isr = str(min(2, n))
        voters = ",".join(f"{m.node_id}@{HOST}:{m.controller_port}" for m in self._nodes)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.home / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(n),
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": str(n),
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": str(n),
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": str(n),
            "share.coordinator.state.topic.min.isr": isr,
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "500",
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        config.update(self.extra_config)
        return config

    def _java_argv(self, main: str, *args: str) -> list[str]:
        assert self._java is not None
        assert self._lib is not None
        return [
            str(self._java),
            f"-Xmx{self.heap_mb}m",
            f"-Xms{max(64, self.heap_mb // 4)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.run_dir / 'kafka-log4j2.properties'}",
            "-cp",
            f"{self._lib}/*",
            main,
            *args,
        ]

    async def _format_all(self) -> None:
        """``kafka-storage format`` for every node at once (same cluster id)."""
        cluster_id = new_cluster_id()
        formats = []
        for node in self._nodes:
            process = ManagedProcess(
                f"kafka-format-{node.node_id}",
                self._java_argv(
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(node.home / "server.properties"),
                ),
                log_path=node.home / "format.log",
                cwd=node.home,
            )
            process.spawn()
            formats.append(process)
        deadline = time.monotonic() + _FORMAT_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(p.returncode is not None for p in formats):
                break
            await asyncio.sleep(_POLL_S / 2)
        for process in formats:
            code = process.returncode
            process.stop(1.0)
            if code != 0:
                raise EmbeddedStackError(
                    f"formatting Kafka storage failed ({process.name}, exit code {code}); "
                    f"log: {process.log_path}\n{process.log_tail()}"
                )

    def _spawn(self, node: _Node) -> None:
        node.process = ManagedProcess(
            f"kafka-{node.node_id}",
            self._java_argv("kafka.Kafka", str(node.home / "server.properties")),
            log_path=node.home / f"kafka-{node.node_id}.log",
            cwd=node.home,
        )
        try:
            node.process.spawn()
        except OSError as exc:
            raise EmbeddedStackError(f"could not execute {self._java}: {exc}") from exc

    async def _wait_ready(self, brokers: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            for node in self._nodes:
                self._check_alive(node)
            if await _cluster_ready(self.address, brokers):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"{n.process.name}: {n.process.log_tail(3)}" for n in self._nodes if n.process
                )
                raise EmbeddedStackError(
                    f"{self.name} did not become ready within {self.startup_timeout_s:g}s "
                    f"({brokers} broker(s) expected); logs: {self.run_dir}\n{tails}"
                )
            await asyncio.sleep(_POLL_S)

    def _check_alive(self, node: _Node) -> None:
        process = node.process
        if process is None or process.returncode is None:
            return
        tail = process.log_tail(10)
        if "Address already in use" in tail or "BindException" in tail:
            raise _PortLost
        raise EmbeddedStackError(
            f"kafka node {node.node_id} exited with code {process.returncode} during start-up; "
            f"log: {process.log_path}\n{tail}"
        )


def new_cluster_id() -> str:
    """A KRaft cluster id (a URL-safe base64 UUID) the storage tool cannot take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):  # "-abc..." would be parsed as an option: 1 in 64
            return cluster_id


class _PortLost(Exception):
    """A node could not bind a port chosen a moment earlier (another process took it)."""


async def _cluster_ready(address: str, brokers: int) -> bool:
    """``brokers`` brokers registered and the group coordinator up on every offsets partition.

    The first FindCoordinator creates ``__consumer_offsets``; waiting for it here spares every
    first consumer group a round of ``GroupCoordinatorNotAvailable`` retries.
    """
    host, _, port = address.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False  # not listening yet: skip the client, which would log every refused connection
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    client = AIOKafkaAdminClient(
        bootstrap_servers=address,
        client_id="agentstream-readiness",
        request_timeout_ms=int(_PROBE_TIMEOUT_S * 1000),
    )
    try:
        await client.start()
        cluster = await client.describe_cluster()
        if len(cluster.get("brokers", [])) < brokers:
            return False
        await client.find_coordinator("agentstream-readiness")
        offsets = await client.describe_topics(["__consumer_offsets"])
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()
    partitions = [p for topic in offsets for p in topic.get("partitions", [])]
    return bool(partitions) and all(
        p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in partitions
    )

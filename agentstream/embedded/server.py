"""The life cycle shared by the embedded servers: spawn on a loopback port, wait until ready, stop.

Subclasses say how to build the command line and how to probe readiness. When the port was chosen
automatically and the child exits during start-up (e.g. it lost a race for the port), start-up is
retried on a fresh port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NoReturn

from agentstream.embedded.exceptions import EmbeddedStackError
from agentstream.embedded.lifecycle import Lifecycle
from agentstream.embedded.process import ManagedProcess, free_port

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_PORT_ATTEMPTS = 3
_POLL_S = 0.02


class EmbeddedServer(Lifecycle, ABC):
    """One local server process. ``start()``/``stop()`` block; ``*_async`` variants do not."""

    name: str = "server"

    def __init__(
        self,
        *,
        run_dir: Path,
        port: int | None = None,
        binary: Path | None = None,
        startup_timeout_s: float = 15.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self._fixed_port = port
        self._binary_override = binary
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._port: int | None = port
        self._process: ManagedProcess | None = None

    # -- to implement -------------------------------------------------------------------------

    @abstractmethod
    def default_binary(self) -> Path:
        """Where the bundled binary lives; raise :class:`EmbeddedStackError` if it is missing."""

    @abstractmethod
    def argv(self, binary: Path, port: int) -> list[str]: ...

    @abstractmethod
    def probe(self) -> bool:
        """One blocking readiness check; ``True`` when the server answers."""

    @abstractmethod
    async def probe_async(self) -> bool:
        """One non-blocking readiness check; ``True`` when the server answers."""

    # -- public API ---------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedStackError(f"{self.name} has not been started")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def start(self) -> None:
        """Spawn the server and block until it answers (or raise :class:`EmbeddedStackError`)."""
        for attempt in self._attempts():
            self._spawn()
            deadline = time.monotonic() + self.startup_timeout_s
            while True:
                if self._exited(attempt):
                    break
                if self.probe():
                    self._log_ready()
                    return
                if time.monotonic() > deadline:
                    self._fail_timeout()
                time.sleep(_POLL_S)

    async def start_async(self) -> None:
        """Like :meth:`start`, without blocking the event loop while waiting."""
        for attempt in self._attempts():
            self._spawn()  # on the loop thread: PDEATHSIG is tied to the spawning thread
            deadline = time.monotonic() + self.startup_timeout_s
            while True:
                if self._exited(attempt):
                    break
                if await self.probe_async():
                    self._log_ready()
                    return
                if time.monotonic() > deadline:
                    self._fail_timeout()
                await asyncio.sleep(_POLL_S)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(self.stop_grace_s)

    async def stop_async(self) -> None:
        if self._process is not None:
            await self._process.stop_async(self.stop_grace_s)

    # -- internals ----------------------------------------------------------------------------

    def _attempts(self) -> range:
        if self.running:
            raise EmbeddedStackError(f"{self.name} is already running (pid {self.pid})")
        return range(1 if self._fixed_port is not None else _PORT_ATTEMPTS)

    def _binary(self) -> Path:
        binary = self._binary_override or self.default_binary()
        if not binary.is_file():
            raise EmbeddedStackError(f"{self.name} binary not found at {binary}")
        return binary

    def _spawn(self) -> None:
        binary = self._binary()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._port = self._fixed_port or free_port(HOST)
        self._process = ManagedProcess(
            self.name, self.argv(binary, self._port), log_path=self.log_path, cwd=self.run_dir
        )
        try:
            self._process.spawn()
        except OSError as exc:
            raise EmbeddedStackError(
                f"{self.name} could not be executed ({binary}): {exc}; log: {self.log_path}"
            ) from exc

    def _exited(self, attempt: int) -> bool:
        """``True`` to retry on a fresh port; raises when the child died and no retry is left."""
        assert self._process is not None
        code = self._process.returncode
        if code is None:
            return False
        tail = self._process.log_tail()
        self._process.stop()
        if attempt + 1 < _PORT_ATTEMPTS and self._fixed_port is None:
            log.warning("%s exited (code %s) on port %s; retrying", self.name, code, self._port)
            return True
        raise EmbeddedStackError(
            f"{self.name} exited with code {code} during start-up on {HOST}:{self._port}; "
            f"log: {self.log_path}\n{tail}"
        )

    def _fail_timeout(self) -> NoReturn:
        assert self._process is not None
        tail = self._process.log_tail()
        self._process.stop(self.stop_grace_s)
        raise EmbeddedStackError(
            f"{self.name} did not become ready on {HOST}:{self._port} within "
            f"{self.startup_timeout_s:g}s; log: {self.log_path}\n{tail}"
        )

    def _log_ready(self) -> None:
        log.info(
            "%s ready: pid=%s %s:%s log=%s", self.name, self.pid, HOST, self._port, self.log_path
        )

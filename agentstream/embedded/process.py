"""A child process tied to this one.

The child runs in its own process group (so a terminal's Ctrl-C reaches only us and we decide the
shutdown order), has ``PR_SET_PDEATHSIG`` set on Linux (so it is killed even if we are
``kill -9``'d), and is stopped with SIGTERM, then SIGKILL after a grace period. Every live child
is also stopped by an ``atexit`` hook.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so spawn from a
long-lived thread (the main thread or the event-loop thread), never from a worker pool.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.01
_LIVE: dict[int, ManagedProcess] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller must cope with losing a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    parent_pid = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


class ManagedProcess:
    """One spawned binary with its output sent to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (reaping it), else ``None``."""
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        if self.running:
            return
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=die_with_parent_hook(),  # prctl must run in the child
            close_fds=True,
        )
        _LIVE[self._proc.pid] = self
        log.debug("%s started: pid=%d log=%s", self.name, self._proc.pid, self.log_path)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (to stop several children in parallel, then ``stop``)."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and reap at once (fault tests: a crash, not a shutdown)."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait()
        self._release()

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; always reaps the child. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s pid=%d ignored SIGTERM; sending SIGKILL", self.name, proc.pid)
                self._signal(signal.SIGKILL)
                proc.wait()
        self._release()

    async def stop_async(self, grace_s: float = 5.0) -> None:
        """Like :meth:`stop`, but polls instead of blocking the event loop."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._signal(signal.SIGTERM)
            if not await _exited_within(proc, grace_s):
                log.warning("%s pid=%d ignored SIGTERM; sending SIGKILL", self.name, proc.pid)
                self._signal(signal.SIGKILL)
                if not await _exited_within(proc, grace_s):
                    proc.wait()  # SIGKILL cannot be ignored; only a stuck kernel call delays it
        self._release()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)

    def _release(self) -> None:
        if self._proc is not None:
            _LIVE.pop(self._proc.pid, None)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


async def _exited_within(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        await asyncio.sleep(_POLL_S)
    return proc.poll() is not None


@atexit.register
def _stop_all_live() -> None:
    for child in list(_LIVE.values()):
        child.stop(grace_s=2.0)

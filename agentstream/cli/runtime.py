"""Shared CLI plumbing: run a coroutine until it ends or SIGINT/SIGTERM arrives."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from rich.console import Console

from agentstream.config import Settings
from agentstream.observability.logging import configure_logging

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def load_cli_settings() -> Settings:
    settings = Settings()
    configure_logging(settings)
    return settings


async def until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)``; SIGINT/SIGTERM set ``stop`` (main should then finish gracefully)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        await main(stop)
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

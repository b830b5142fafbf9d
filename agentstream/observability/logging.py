"""Structured logging with structlog.

JSON lines in production, readable console output in dev. A correlation id (the request_id) is
bound per request with :func:`bind_request`; it rides on every log line emitted while handling it.
Log calls in this project pass identifiers and sizes, never message contents, tool arguments or
secrets. The library configures logging only when asked (the CLI asks).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from agentstream.config import Settings

NOISY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "aiohttp", "asyncio", "httpx", "mcp")


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Route stdlib and structlog output through one structlog renderer."""
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "json" if settings.env == "production" else "console"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)


@contextmanager
def bind_request(**ids: str | int | None) -> Iterator[None]:
    """Bind correlation ids (request_id, session_id, stage, ...) for the duration of a block."""
    clean = {k: v for k, v in ids.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**clean):
        yield

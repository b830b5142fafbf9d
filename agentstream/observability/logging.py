"""Structured logging with structlog.

JSON lines in production, readable console output in dev. A correlation id (the request_id) is
bound per request with :func:`bind_request`; it rides on every log line emitted while handling it.
Log calls in this project pass identifiers and sizes, never message contents, tool arguments or
secrets. The library configures logging only when asked (the CLI asks).
"""

from __future__ import annotations

import logging
import re
import string
import sys
from contextvars import Token
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from agentstream.config import Settings

NOISY_LOGGERS = (
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "aiohttp",
    "asyncio",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "mcp",
    "openai",
    "anthropic",
)


def json_logs(settings: Settings) -> bool:
    """Whether log lines are JSON: ``log_format``, or ``auto`` in production."""
    fmt = settings.log_format
    return fmt == "json" or (fmt == "auto" and settings.env == "production")


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Route stdlib and structlog output through one structlog renderer.

    Every record goes to the one root handler: agentstream's own lines, the libraries' (Faust,
    mode, aiokafka, ...: their own handlers are removed and they propagate to the root), and
    Python warnings (``logging.captureWarnings``), so in production the stream is JSON only.
    """
    fmt = "json" if json_logs(settings) else "console"
    # Tracebacks are rendered without local variables: locals hold prompts and tool arguments.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            pass_foreign_args=False,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if fmt == "json" else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in NOISY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)


def get_logger(name: str) -> Any:
    """A structlog logger that hands its events to stdlib logging (``logging.getLogger(name)``).

    It does not depend on structlog's global configuration, so embedding applications keep
    control of their logging; :func:`configure_logging` installs the renderer.
    """
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


_LOG_ID_MAX = 64
_LOG_ID_PUNCT = "._:@-"
_LOG_ID_SAFE = frozenset(string.ascii_letters + string.digits + _LOG_ID_PUNCT)
# an id made of those characters only (the usual case) is returned unchanged, without
# per-character work
_PLAIN_ID = re.compile(rf"[A-Za-z0-9{re.escape(_LOG_ID_PUNCT)}]{{0,{_LOG_ID_MAX}}}")


def log_safe_id(value: str) -> str:
    """An id as it may appear in a log line: characters outside ``[A-Za-z0-9._:@-]`` escaped
    as Python escapes (a NUL becomes backslash-x00), cut to 64 characters with the dropped
    length noted. Ids reach the log context before validation, so hostile ones (NUL bytes,
    10 KB) are made safe here."""
    if _PLAIN_ID.fullmatch(value) is not None:
        return value
    head = value[:_LOG_ID_MAX]
    text = "".join(c if c in _LOG_ID_SAFE else c.encode("unicode_escape").decode() for c in head)
    if len(value) > _LOG_ID_MAX:
        text += f"...(+{len(value) - _LOG_ID_MAX} chars)"
    return text


class bind_request:
    """Bind correlation ids (request_id, session_id, stage, ...) for the duration of a block.
    String values pass through :func:`log_safe_id`; ``None`` values are not bound. On leaving,
    each bound key has its earlier value again (or none).

    A plain class rather than ``structlog.contextvars.bound_contextvars``: it runs once per stage
    event, and the generator-based context manager (which also copies the whole context to save
    the earlier values) cost several times more than setting and resetting the variables."""

    __slots__ = ("_ids", "_tokens")

    def __init__(self, **ids: str | int | None) -> None:
        self._ids = ids
        self._tokens: dict[str, Token[Any]] = {}

    def __enter__(self) -> None:
        clean = {
            k: log_safe_id(v) if isinstance(v, str) else v
            for k, v in self._ids.items()
            if v is not None
        }
        self._tokens = dict(bind_contextvars(**clean))

    def __exit__(self, *exc_info: object) -> None:
        reset_contextvars(**self._tokens)

"""Expected failures end a command with one line on stderr and a non-zero exit, never a traceback.

The line says what failed and which setting to fix. ``--debug`` (``agentstream --debug CMD``)
raises the error instead, traceback and all. Errors are recognised by class, looked up by module
name so that this module imports no client library (the CLI stays fast to start): an error of a
library that was never imported cannot have been raised.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from agentstream.settings_source import describe_setting

EXIT_FAILURE = 1
EXIT_CONFIG = 2


class _State:
    debug = False
    json_logs = False


def set_debug(enabled: bool) -> None:
    _State.debug = enabled


def set_json_logs(enabled: bool) -> None:
    """Logs are JSON lines (production): the failure line is one of them."""
    _State.json_logs = enabled


def json_logs_enabled() -> bool:
    return _State.json_logs


def debug_enabled() -> bool:
    return _State.debug


def _is(exc: BaseException, module: str, name: str) -> bool:
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _describe(exc: BaseException) -> str:
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def validation_line(exc: BaseException) -> str:
    """One line for a pydantic ``ValidationError`` of the settings: the variable (or file:line),
    what is wrong, and the input unless the setting may hold a secret."""
    errors = exc.errors()  # type: ignore[attr-defined]
    first = errors[0]
    loc = tuple(str(p) for p in first.get("loc", ()))
    where = describe_setting(loc) if loc else "settings"
    message = str(first.get("msg", "invalid value"))
    shown = ""
    secret = any(word in "_".join(loc).lower() for word in ("password", "key", "secret", "token"))
    if "input" in first and not secret and isinstance(first["input"], str | int | float):
        shown = f" (got {first['input']!r})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message[:1].lower()}{message[1:]}{shown}; fix or unset it{more}"


def one_line(exc: BaseException) -> tuple[str, int]:
    """The line to print for ``exc`` and the exit code."""
    if _is(exc, "pydantic_core", "ValidationError"):
        return validation_line(exc), EXIT_CONFIG
    if _is(exc, "agentstream.exceptions", "ConfigError"):
        return _first_line(str(exc)), EXIT_CONFIG
    if _is(exc, "agentstream.exceptions", "AgentStreamError"):
        return _first_line(str(exc)) or type(exc).__name__, EXIT_FAILURE
    kafka = describe_setting(("kafka_bootstrap_servers",))
    if _is(exc, "aiokafka.errors", "KafkaError"):
        return f"Kafka request failed ({_describe(exc)}); check {kafka}", EXIT_FAILURE
    if _is(exc, "redis.exceptions", "RedisError"):
        redis = describe_setting(("redis_url",))
        return f"Redis request failed ({_describe(exc)}); check {redis}", EXIT_FAILURE
    if _is(exc, "httpx", "HTTPError"):
        return f"HTTP request failed ({_describe(exc)})", EXIT_FAILURE
    if isinstance(exc, OSError | TimeoutError):
        return f"{_describe(exc)}", EXIT_FAILURE
    return (
        f"unexpected error {_describe(exc)} (run with --debug for the traceback)",
        EXIT_FAILURE,
    )


def exit_with(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one line and exit; with ``--debug``, raise it instead."""
    if debug_enabled():
        raise exc
    line, code = one_line(exc)
    if _State.json_logs:
        from agentstream.observability.logging import get_logger

        get_logger("agentstream.cli").error("command failed", error=line, exit_code=code)
    else:
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True, highlight=False, soft_wrap=True).print(
            Text.assemble(("error:", "red"), " ", line)
        )
    raise SystemExit(code)

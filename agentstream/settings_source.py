"""Where a setting comes from, said the way an operator fixes it.

Every setting has one environment variable name (``AGENTSTREAM_`` + the field path joined by
``__``: ``limits.max_in_flight`` is ``AGENTSTREAM_LIMITS__MAX_IN_FLIGHT``). When the variable is
not set but the TOML config file sets the key, the setting is named as ``file:line`` instead.
:func:`unknown_variables` finds ``AGENTSTREAM_*`` variables no setting reads, each with the
closest known name (difflib), so a typo is reported instead of silently ignored.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic is imported by the callers that pass models (the CLI starts fast)
    from pydantic import BaseModel

PREFIX = "AGENTSTREAM_"
DELIMITER = "__"
CONFIG_FILE_ENV = "AGENTSTREAM_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "agentstream.toml"
# Variables that are not settings but are read elsewhere (the config file itself, the dev
# stack's download cache, the test suite's backends).
NOT_SETTINGS = frozenset({CONFIG_FILE_ENV, "AGENTSTREAM_CACHE_DIR"})
NOT_SETTINGS_PREFIXES = ("AGENTSTREAM_TEST_",)

_TOML_ERROR_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_TOML_TABLE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(?:#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\".]+)\s*=")


def env_name(path: Iterable[str | int]) -> str:
    """The variable that sets ``path`` (``("limits", "max_in_flight")``)."""
    return PREFIX + DELIMITER.join(str(p).upper() for p in path)


def config_file() -> tuple[Path, bool]:
    """The TOML file to read and whether it was named explicitly (``AGENTSTREAM_CONFIG_FILE``)."""
    named = os.environ.get(CONFIG_FILE_ENV)
    return Path(named or DEFAULT_CONFIG_FILE), bool(named)


def toml_error_line(message: str) -> int | None:
    """The line number in a ``tomllib.TOMLDecodeError`` message."""
    match = _TOML_ERROR_LINE.search(message)
    return int(match.group(1)) if match else None


def toml_line(path: Path, keys: tuple[str, ...]) -> int | None:
    """The line of ``path`` that sets the dotted key ``keys`` (``("limits", "max_in_flight")``),
    from ``[table]`` headers and ``key =`` lines (dotted keys and inline tables of a parent key
    resolve to the parent's line). ``None`` when the file does not set it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    table: tuple[str, ...] = ()
    best: tuple[int, int] | None = None  # (matched depth, line)
    for number, line in enumerate(lines, start=1):
        header = _TOML_TABLE.match(line)
        if header:
            table = _split_key(header.group(1))
            depth = _common(table, keys)
            if depth == len(table) and (best is None or depth > best[0]):
                best = (depth, number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            full = table + _split_key(key.group(1))
            depth = _common(full, keys)
            if depth == len(full) and (best is None or depth > best[0]):
                best = (depth, number)
    if best is None or best[0] == 0:
        return None
    return best[1]


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"') for part in text.split("."))


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _env_has(name: str, environ: Mapping[str, str]) -> bool:
    upper = name.upper()
    return any(key.upper() == upper for key in environ)


def describe_setting(path: tuple[str | int, ...], environ: Mapping[str, str] | None = None) -> str:
    """How an operator finds ``path``: its variable when that is set (or the variable of an
    enclosing group set as JSON, with the rest of the path), else ``file:line`` when the config
    file sets it, else the variable (to set)."""
    environ = os.environ if environ is None else environ
    name = env_name(path)
    for cut in range(len(path), 0, -1):  # a group may be set as one JSON variable
        if _env_has(env_name(path[:cut]), environ):
            rest = ".".join(str(p) for p in path[cut:])
            return env_name(path[:cut]) + (f" ({rest})" if rest else "")
    toml, _ = config_file()
    if toml.is_file():
        line = toml_line(toml, tuple(str(p) for p in path))
        if line is not None:
            return f"{toml}:{line}"
    return name


# --- unknown variables ------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownNames:
    exact: frozenset[str]
    prefixes: tuple[str, ...]  # free-form below these (dict and list fields)

    def knows(self, name: str) -> bool:
        upper = name.upper()
        return upper in self.exact or upper.startswith(self.prefixes)


def known_names(model: type[BaseModel]) -> KnownNames:
    exact: set[str] = set()
    prefixes: list[str] = []
    _collect(model, PREFIX, exact, prefixes)
    return KnownNames(frozenset(exact), tuple(prefixes))


def _collect(model: type[BaseModel], prefix: str, exact: set[str], prefixes: list[str]) -> None:
    for field_name, field in model.model_fields.items():
        name = prefix + field_name.upper()
        exact.add(name)
        if _is_container(field.annotation):  # dict[str, Model] too: its keys are free-form
            prefixes.append(name + DELIMITER)
            continue
        nested = _model_type(field.annotation)
        if nested is not None:
            _collect(nested, name + DELIMITER, exact, prefixes)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    from pydantic import BaseModel

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_container(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_container(arg) for arg in typing.get_args(annotation))
    return origin in (dict, list, tuple, set)


def unknown_variables(
    model: type[BaseModel], environ: Mapping[str, str] | None = None
) -> list[tuple[str, str | None]]:
    """``(variable, closest known name or None)`` for every ``AGENTSTREAM_*`` variable that no
    setting reads."""
    environ = os.environ if environ is None else environ
    known = known_names(model)
    candidates = sorted(known.exact)
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in NOT_SETTINGS:
            continue
        if upper.startswith(NOT_SETTINGS_PREFIXES) or known.knows(upper):
            continue
        close = difflib.get_close_matches(upper, candidates, n=1, cutoff=0.75)
        found.append((name, close[0] if close else None))
    return found

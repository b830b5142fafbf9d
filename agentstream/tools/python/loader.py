"""Where a worker finds Python tools: module paths in settings and installed entry points.

``tools.python_modules`` lists modules (``"pkg.tools"``: every ``@agentstream.tool`` object in
the module's namespace, in definition order) or single objects (``"pkg.tools:lookup"``). The
modules must be importable by the worker (installed, or on ``PYTHONPATH``).

Installed packages may offer tools through the entry point group ``agentstream.tools``: an entry
point names a module, a tool, or a list of tools (``[project.entry-points."agentstream.tools"]``
``crm = "crm_tools.agent"``). ``tools.python_entry_points = false`` ignores them.

Anything wrong (a module that does not import, an attribute that is not a tool, a module without
tools, two tools with one name) is a :class:`ConfigError` at start-up: one line naming the
setting or the entry point, and the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from agentstream.exceptions import ConfigError
from agentstream.settings_source import describe_setting
from agentstream.tools.python.function import PythonTool
from agentstream.tools.settings import ToolSettings

ENTRY_POINT_GROUP = "agentstream.tools"
MODULES_SETTING = ("tools", "python_modules")


def load_python_tools(settings: ToolSettings) -> list[PythonTool[..., Any]]:
    """Every configured Python tool, each once; raises :class:`ConfigError` (see module doc)."""
    found: dict[str, tuple[PythonTool[..., Any], str]] = {}
    for path in settings.python_modules:
        _add(found, _from_setting(path), f"{_setting()} entry {path!r}")
    if settings.python_entry_points:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            _add(found, _from_entry_point(point), _describe_point(point))
    return [tool for tool, _ in found.values()]


def _add(
    found: dict[str, tuple[PythonTool[..., Any], str]],
    tools: list[PythonTool[..., Any]],
    source: str,
) -> None:
    for tool in tools:
        seen = found.get(tool.name)
        if seen is None:
            found[tool.name] = (tool, source)
        elif seen[0] is not tool:
            raise ConfigError(
                f"{source}: a Python tool named {tool.name!r} also comes from {seen[1]}; "
                "give one of them another name (@agentstream.tool(name=...))"
            )


def _setting() -> str:
    where = describe_setting(MODULES_SETTING)
    name = ".".join(MODULES_SETTING)
    return name if where.lower() == name else f"{name} ({where})"


def _from_setting(path: str) -> list[PythonTool[..., Any]]:
    where = f"{_setting()} entry {path!r}"
    module_name, _, attribute = path.strip().partition(":")
    module = _import(module_name, where)
    if not attribute:
        return _tools_in_module(module, where)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(
            f"{where}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    return _as_tools(value, where)


def _from_entry_point(point: EntryPoint) -> list[PythonTool[..., Any]]:
    where = _describe_point(point)
    try:
        value = point.load()
    except Exception as exc:  # any failure of third-party code: one line, refused
        raise ConfigError(
            f"{where}: cannot load ({_reason(exc)}); fix or uninstall the package, "
            "or set tools.python_entry_points=false"
        ) from exc
    if isinstance(value, ModuleType):
        return _tools_in_module(value, where)
    return _as_tools(value, where)


def _describe_point(point: EntryPoint) -> str:
    dist = point.dist.name if point.dist is not None else "an installed package"
    return f"entry point {point.name!r} = {point.value!r} ({ENTRY_POINT_GROUP}, from {dist})"


def _import(module_name: str, where: str) -> ModuleType:
    if not module_name:
        raise ConfigError(f"{where}: expected 'package.module' or 'package.module:attribute'")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = " (is it installed, or on PYTHONPATH?)" if exc.name == module_name else ""
        raise ConfigError(f"{where}: cannot import ({_reason(exc)}){hint}") from exc
    except Exception as exc:  # user code failing at import: one line, refused
        raise ConfigError(f"{where}: cannot import ({_reason(exc)})") from exc


def _tools_in_module(module: ModuleType, where: str) -> list[PythonTool[..., Any]]:
    tools = [value for value in vars(module).values() if isinstance(value, PythonTool)]
    if not tools:
        raise ConfigError(f"{where}: module {module.__name__!r} defines no @agentstream.tool")
    return tools


def _as_tools(value: Any, where: str) -> list[PythonTool[..., Any]]:
    if isinstance(value, PythonTool):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = list(value)
        if items and all(isinstance(item, PythonTool) for item in items):
            return items
    raise ConfigError(f"{where}: not an @agentstream.tool (nor a list of them)")


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__

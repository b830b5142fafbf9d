"""Finds agent definitions: a folder of files, Python modules, the ``agentstream.agents`` entry
points. Every problem is an :class:`AgentDefinitionError` naming the file (or module), the
field and the reason, so a worker refuses to start with one line an operator can act on."""

from __future__ import annotations

import importlib
import json
import tomllib
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from jsonschema import SchemaError, validators
from pydantic import ValidationError

from agentstream.agents.definition import Agent
from agentstream.agents.exceptions import AgentDefinitionError
from agentstream.settings_source import describe_setting

ENTRY_POINT_GROUP = "agentstream.agents"
SUFFIXES = (".toml", ".yaml", ".yml")


def from_folder(folder: Path) -> list[tuple[str, Agent]]:
    """Every ``*.toml`` / ``*.yaml`` / ``*.yml`` file of ``folder`` (sorted), one agent each."""
    if not folder.is_dir():
        where = describe_setting(("agents", "dir"))
        raise AgentDefinitionError(str(folder), "", f"no such folder; fix {where}")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    return [(str(p), from_file(p)) for p in files]


def from_file(path: Path) -> Agent:
    raw = _read_mapping(path)
    raw.setdefault("name", path.stem)
    return resolve(str(path), raw, base=path.parent)


def from_modules(specs: Iterable[str]) -> list[tuple[str, Agent]]:
    """``pkg.mod`` (every top-level ``Agent``) or ``pkg.mod:attr`` (an Agent or a list)."""
    found: list[tuple[str, Agent]] = []
    for spec in specs:
        found.extend((spec, a) for a in _module_agents(spec))
    return found


def from_entry_points() -> list[tuple[str, Agent]]:
    found: list[tuple[str, Agent]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        source = f"entry point {ep.name} ({ep.value})"
        try:
            value = ep.load()
        except Exception as exc:
            raise AgentDefinitionError(source, "", f"cannot load ({exc})") from exc
        found.extend((source, checked(source, a)) for a in _agents_in(source, value))
    return found


def resolve(source: str, raw: dict[str, Any], *, base: Path | None) -> Agent:
    """An Agent from a mapping, with its files read (relative to ``base``)."""
    try:
        agent = Agent.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "(definition)"
        reason = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise AgentDefinitionError(source, field, reason) from None
    return checked(source, agent, base)


def checked(source: str, agent: Agent, base: Path | None = None) -> Agent:
    update: dict[str, Any] = {}
    if agent.instructions_file is not None:
        if agent.instructions is not None:
            raise AgentDefinitionError(
                source, "instructions_file", "set instructions or instructions_file, not both"
            )
        update["instructions"] = _read_text(
            source, "instructions_file", agent.instructions_file, base
        )
    elif not (agent.instructions or "").strip():
        raise AgentDefinitionError(source, "instructions", "missing (or use instructions_file)")
    if agent.output_schema_file is not None:
        if agent.output_schema is not None:
            raise AgentDefinitionError(
                source, "output_schema_file", "set output_schema or output_schema_file, not both"
            )
        text = _read_text(source, "output_schema_file", agent.output_schema_file, base)
        update["output_schema"] = _json_object(source, "output_schema_file", text)
    schema = update.get("output_schema", agent.output_schema)
    if schema is not None:
        _check_schema(source, schema)
    if any(not p.strip() for p in agent.tools):
        raise AgentDefinitionError(source, "tools", "an empty tool pattern")
    return agent.model_copy(update=update) if update else agent


def _check_schema(source: str, schema: dict[str, Any]) -> None:
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise AgentDefinitionError(
            source, "output_schema", f"not a valid JSON Schema ({exc.message})"
        ) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentDefinitionError(str(path), "", f"cannot read ({exc.strerror})") from exc
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise AgentDefinitionError(
            str(path), "", f"malformed {path.suffix[1:]} ({reason})"
        ) from None
    if not isinstance(data, dict):
        raise AgentDefinitionError(str(path), "", "must be a table/mapping of fields")
    return data


def _read_text(source: str, field: str, name: Path, base: Path | None) -> str:
    path = name if name.is_absolute() or base is None else base / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentDefinitionError(source, field, f"cannot read {path} ({exc.strerror})") from None


def _json_object(source: str, field: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AgentDefinitionError(source, field, f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise AgentDefinitionError(source, field, "must hold a JSON object")
    return value


def _module_agents(spec: str) -> list[Agent]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        where = describe_setting(("agents", "modules"))
        raise AgentDefinitionError(spec, "", f"cannot import ({exc}); fix {where}") from exc
    module_file = getattr(module, "__file__", None)
    base = Path(module_file).parent if module_file else None
    if attr:
        if not hasattr(module, attr):
            raise AgentDefinitionError(spec, "", f"module has no attribute {attr!r}")
        value: Any = getattr(module, attr)
    else:
        value = [v for v in vars(module).values() if isinstance(v, Agent)]
    return [checked(spec, a, base) for a in _agents_in(spec, value)]


def _agents_in(source: str, value: Any) -> Iterator[Agent]:
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, Agent):
            raise AgentDefinitionError(
                source, "", f"expected agentstream.agents.Agent, got {type(item).__name__}"
            )
        yield item

"""Load the built-in ``.avsc`` contracts into self-contained, parsed schemas (once per process).

Each shared named type lives in its own ``io.agentstream.<Name>.avsc`` file (``avro/``) and is
referenced by full name. :func:`expand` inlines a referenced type at its first use and leaves
later uses as name references, so every top-level schema stands alone (as a schema registry
requires).

``released/`` holds every released version of the top-level contracts, self-contained, one file
each, named ``<id>-<Name>.avsc``: the id is the version's schema id in the built-in catalog
(fixed forever), and the file is what a released build may have written under it. See
docs/contract.md ("Schema ids" and "Evolving the contracts").
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, UnknownType, to_parsing_canonical_form

from agentstream.schemas.exceptions import SerializationError

NAMESPACE = "io.agentstream"

#: The top-level records that get encoded, in catalog-id order.
SCHEMA_NAMES: tuple[str, ...] = (
    "AgentRequest",
    "GenerationTurn",
    "ToolCallBatch",
    "AgentResponse",
    "ErrorEvent",
    "MetricsEvent",
    "StreamDelta",
    "Feedback",
    "CancelRequest",
    "ApprovalRequest",
    "ApprovalDecision",
    "ApprovalAudit",
    "DelegationResult",
)

_NAMED_TYPES = ("record", "enum", "fixed")
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string", None)


def full_name(name: str) -> str:
    """``AgentRequest`` -> ``io.agentstream.AgentRequest``; full names pass through."""
    return name if "." in name else f"{NAMESPACE}.{name}"


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One self-contained record schema: JSON definition, compact text and fastavro's parse."""

    full_name: str
    definition: Mapping[str, Any]
    text: str
    parsed: Any

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> AvroSchema:
        """Parse a self-contained record definition; raises SerializationError if invalid."""
        try:
            parsed: Any = fastavro.parse_schema(copy.deepcopy(dict(definition)))
        except (SchemaParseException, UnknownType, KeyError, TypeError, ValueError) as exc:
            raise SerializationError(f"invalid Avro schema: {exc}") from exc
        if parsed.get("type") != "record":
            raise SerializationError("top-level Avro schema must be a record")
        return cls(
            full_name=str(parsed["name"]),
            definition=definition,
            text=json.dumps(definition, separators=(",", ":")),
            parsed=parsed,
        )

    @classmethod
    def from_text(cls, text: str) -> AvroSchema:
        """Parse schema JSON text (as returned by a schema registry)."""
        try:
            definition = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SerializationError(f"schema is not valid JSON: {exc}") from exc
        if not isinstance(definition, dict):
            raise SerializationError("top-level Avro schema must be a record")
        return cls.from_definition(definition)


def _parse_released(name: str, text: str) -> tuple[int, AvroSchema]:
    head, _, rest = name.partition("-")
    if not head.isdigit() or not rest.endswith(".avsc"):
        raise SerializationError(f"released/{name}: file name must be <id>-<Name>.avsc")
    schema = AvroSchema.from_text(text)
    if schema.full_name != full_name(rest.removesuffix(".avsc")):
        raise SerializationError(f"released/{name} defines {schema.full_name}")
    return int(head), schema


@functools.cache
def released_schemas() -> Mapping[int, AvroSchema]:
    """Every released version of the top-level contracts by its fixed schema id."""
    folder = resources.files("agentstream.schemas").joinpath("released")
    released: dict[int, AvroSchema] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".avsc"):
            schema_id, schema = _parse_released(entry.name, entry.read_text(encoding="utf-8"))
            if schema_id in released:
                raise SerializationError(f"released/: schema id {schema_id} is used twice")
            released[schema_id] = schema
    return dict(sorted(released.items()))


def canonical(schema: AvroSchema) -> str:
    """The schema's Parsing Canonical Form: equal for schemas that write the same bytes."""
    return str(to_parsing_canonical_form(schema.parsed))


def _read_files() -> dict[str, dict[str, Any]]:
    folder = resources.files("agentstream.schemas").joinpath("avro")
    raw: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".avsc"):
            continue
        definition = json.loads(entry.read_text(encoding="utf-8"))
        name = f"{definition['namespace']}.{definition['name']}"
        if entry.name != f"{name}.avsc":
            raise SerializationError(f"{entry.name} defines {name}; file name must match")
        raw[name] = definition
    return raw


def expand(schema: Any, library: Mapping[str, Mapping[str, Any]], seen: set[str]) -> Any:
    """Return ``schema`` with references into ``library`` inlined at their first use."""
    if isinstance(schema, str):
        if schema in library and schema not in seen:
            return expand(library[schema], library, seen)
        return schema
    if isinstance(schema, list):
        return [expand(branch, library, seen) for branch in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = dict(schema)
    kind = out.get("type")
    if kind in _NAMED_TYPES:
        seen.add(f"{out.get('namespace', NAMESPACE)}.{out['name']}")
    if kind == "record":
        out["fields"] = [
            {**field, "type": expand(field["type"], library, seen)} for field in out["fields"]
        ]
    elif kind == "array":
        out["items"] = expand(out["items"], library, seen)
    elif kind == "map":
        out["values"] = expand(out["values"], library, seen)
    elif kind not in _PRIMITIVES and kind not in _NAMED_TYPES:
        out["type"] = expand(kind, library, seen)  # {"type": <reference or nested schema>}
    return out


@functools.cache
def builtin_schemas() -> Mapping[str, AvroSchema]:
    """The six top-level contracts by full name, parsed once."""
    library = _read_files()
    return {
        full_name(name): AvroSchema.from_definition(
            expand(library[full_name(name)], library, set())
        )
        for name in SCHEMA_NAMES
    }

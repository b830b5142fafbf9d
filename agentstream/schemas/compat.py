"""Compatibility of contract versions, checked by reading generated records across versions.

Two versions of a record are compatible both ways when

- **backward**: every record written with the old version reads with the new one (new workers
  reading retry and dead-letter topics, replays, requests from clients not yet upgraded);
- **forward**: every record written with the new version reads with the old one (workers not yet
  upgraded during a rolling deploy, clients in other languages that still know the old schema).

Each direction is checked on generated records (fastavro's ``generate_many``, a fixed seed so a
run is repeatable) of the writer version, encoded and then read through Avro schema resolution
with the reader version. Every generated array holds records and every union branch and enum
symbol is drawn, so a field added without a default, a changed type, a removed union branch or
a removed enum symbol shows up as a failed read. A reader must also consume the whole body.

Contracts are held to FULL_TRANSITIVE compatibility: the current version of each record against
every released version of it (``schemas/released/``). docs/contract.md lists the evolution rules.

One deliberate exception, :data:`ACCEPTED_NEW_SYMBOLS`: an enum symbol added to an enum whose
released versions have no ``default`` cannot be read by those versions, whatever the writer does
(Avro resolves an unknown symbol only through the *reader's* default). Such a symbol is listed
here with the reason it is accepted; the forward check then leaves it out of the records it
generates, so every other change is still checked both ways. docs/contract.md ("AgentState
CANCELLED") says what old readers see.
"""

from __future__ import annotations

import copy
import io
import random
from collections.abc import Iterator
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.utils import generate_many

from agentstream.schemas.loader import AvroSchema, builtin_schemas, released_schemas

SAMPLES = 200
SEED = 13
#: Enum full name -> symbols added on purpose that released readers without a default cannot read.
ACCEPTED_NEW_SYMBOLS: dict[str, frozenset[str]] = {
    # issue 12: a cancelled request is answered CANCELLED (also error_code CANCELLED); the enum
    # got its default (ERROR) in the same version, so no later symbol breaks a reader again
    "io.agentstream.AgentState": frozenset({"CANCELLED"}),
}
_READ_ERRORS = (SchemaResolutionError, EOFError, ValueError, TypeError, KeyError, IndexError)


def _generated(schema: AvroSchema, samples: int) -> Iterator[object]:
    state = random.getstate()
    random.seed(SEED)
    try:
        yield from list(generate_many(schema.parsed, samples))
    finally:
        random.setstate(state)


def unreadable(writer: AvroSchema, reader: AvroSchema, *, samples: int = SAMPLES) -> str | None:
    """Why some generated ``writer`` record does not read with ``reader`` (None: all read)."""
    for record in _generated(writer, samples):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer.parsed, record)
        size = buffer.tell()
        buffer.seek(0)
        try:
            fastavro.schemaless_reader(buffer, writer.parsed, reader.parsed)
        except _READ_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"
        if buffer.tell() != size:
            return f"{size - buffer.tell()} bytes left unread"
    return None


def _without_accepted_symbols(schema: AvroSchema) -> AvroSchema:
    """``schema`` with the :data:`ACCEPTED_NEW_SYMBOLS` left out of its enums."""

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: strip(v) for k, v in node.items()}
        if out.get("type") == "enum":
            name = f"{out.get('namespace', 'io.agentstream')}.{out['name']}"
            dropped = ACCEPTED_NEW_SYMBOLS.get(name, frozenset())
            out["symbols"] = [s for s in out["symbols"] if s not in dropped]
        return out

    return AvroSchema.from_definition(strip(copy.deepcopy(dict(schema.definition))))


def incompatibilities(
    old: AvroSchema, new: AvroSchema, *, old_label: str = "old", samples: int = SAMPLES
) -> list[str]:
    """The problems between two versions of one record, each direction checked: [] if none."""
    problems = []
    if old.full_name != new.full_name:
        return [f"{new.full_name} is not a version of {old.full_name}"]
    backward = unreadable(old, new, samples=samples)
    if backward is not None:
        problems.append(
            f"{new.full_name}: not backward compatible with {old_label} "
            f"(its records do not read with the new version: {backward})"
        )
    forward = unreadable(_without_accepted_symbols(new), old, samples=samples)
    if forward is not None:
        problems.append(
            f"{new.full_name}: not forward compatible with {old_label} "
            f"(new records do not read with it: {forward})"
        )
    return problems


def check_against_released(
    current: dict[str, AvroSchema] | None = None, *, samples: int = SAMPLES
) -> list[str]:
    """Every current contract against every released version of it (FULL_TRANSITIVE)."""
    contracts = current if current is not None else dict(builtin_schemas())
    problems = []
    for schema_id, released in released_schemas().items():
        now = contracts.get(released.full_name)
        if now is not None:
            label = f"released schema id {schema_id}"
            problems += incompatibilities(released, now, old_label=label, samples=samples)
    return problems

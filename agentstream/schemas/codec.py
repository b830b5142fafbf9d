"""Avro codec for the pipeline contracts, in the Confluent wire format.

Wire format: magic byte ``0``, the writer schema id as a 4-byte big-endian integer, then the
Avro binary body (no container header). Records are the typed contracts of
:mod:`agentstream.schemas.contracts` (``encode_record`` / ``decode_record``), or plain dicts keyed
by the field names of the ``.avsc`` contracts (``encode`` / ``decode``, for tools that handle any
record). Timestamp fields (``timestamp-millis``) are timezone-aware ``datetime``
objects: pass UTC-aware datetimes (naive ones are rejected; plain ``int`` epoch milliseconds are
also accepted on encode), and decoding always returns UTC-aware datetimes.

Decoding resolves the writer schema (looked up by id) against the current contract, so data
written with an older compatible version reads as the current shape. Every failure raises
:class:`SerializationError` whose ``reason`` names fields and types, never field values.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import fastavro
import msgspec
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

from agentstream.config import Settings
from agentstream.schemas.catalog import LocalCatalog, SchemaCatalog
from agentstream.schemas.contracts import Contract
from agentstream.schemas.exceptions import SchemaNotFoundError, SerializationError
from agentstream.schemas.loader import SCHEMA_NAMES, AvroSchema, builtin_schemas, full_name
from agentstream.schemas.registry import SchemaRegistryCatalog

__all__ = ["SCHEMA_NAMES", "AvroCodec", "codec_from_settings"]

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size

_Path = tuple[str, ...]
C = TypeVar("C", bound=Contract)
_BUILTINS = (datetime,)  # fastavro writes timestamp-millis from datetimes


class AvroCodec:
    """Encodes and decodes the six contracts (see :data:`SCHEMA_NAMES`) by short name."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else LocalCatalog()
        self._schemas = builtin_schemas()
        self._timestamps = {
            name: tuple(_timestamp_paths(schema.parsed)) for name, schema in self._schemas.items()
        }

    async def prepare(self) -> None:
        """Register (or look up) ids for all built-in contracts; call once before encoding."""
        await self.catalog.prepare(self._schemas.values())

    async def aclose(self) -> None:
        """Close the catalog's connections (registry client), if any."""
        await self.catalog.aclose()

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` as contract ``name`` (e.g. ``"AgentRequest"``) in wire format."""
        schema = self._schema(name)
        _check_record(schema, record, self._timestamps[schema.full_name])
        return self._write(schema, record)

    def _write(self, schema: AvroSchema, record: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(MAGIC_BYTE, self.catalog.id_for(schema.full_name)))
        try:
            fastavro.schemaless_writer(buffer, schema.parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode {schema.full_name}: {type(exc).__name__}"
            ) from exc
        return buffer.getvalue()

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode wire-format ``data`` as contract ``name``; the writer id must be known."""
        reader = self._schema(name)
        schema_id = self.peek_schema_id(data)
        writer = self.catalog.schema_for_id(schema_id)
        if writer is None:
            hint = "" if isinstance(self.catalog, LocalCatalog) else "; use decode_async"
            raise SchemaNotFoundError(f"unknown schema id {schema_id}{hint}")
        return _read(data, schema_id, writer, reader)

    async def decode_async(self, name: str, data: bytes) -> dict[str, Any]:
        """Like :meth:`decode`, fetching an unknown writer schema from the catalog first."""
        reader = self._schema(name)
        schema_id = self.peek_schema_id(data)
        writer = self.catalog.schema_for_id(schema_id) or await self.catalog.fetch(schema_id)
        return _read(data, schema_id, writer, reader)

    def encode_record(self, record: Contract) -> bytes:
        """Encode a typed contract (its class names the schema) in wire format. Its fields are
        typed (mypy-checked Structs, tests/test_contracts.py holds them to the schemas), so the
        per-record type validation of :meth:`encode` (dicts from callers) is skipped: it cost
        more than the encoding itself on the hot path."""
        schema = self._schema(record.schema)
        return self._write(schema, msgspec.to_builtins(record, builtin_types=_BUILTINS))

    def decode_record(self, contract: type[C], data: bytes) -> C:
        """Decode wire-format ``data`` as ``contract``; the writer id must be known."""
        return _typed(contract, self.decode(contract.schema, data))

    async def decode_record_async(self, contract: type[C], data: bytes) -> C:
        """Like :meth:`decode_record`, fetching an unknown writer schema first."""
        return _typed(contract, await self.decode_async(contract.schema, data))

    @staticmethod
    def peek_schema_id(data: bytes) -> int:
        """The schema id in the wire-format header; SerializationError if there is none."""
        if not data:
            raise SerializationError("empty payload; expected Confluent Avro wire format")
        if len(data) < HEADER_SIZE:
            raise SerializationError(
                f"payload is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
            )
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise SerializationError(
                f"wrong magic byte 0x{data[0]:02x} (expected 0x00); not Confluent Avro wire format"
            )
        return int(schema_id)

    def _schema(self, name: str) -> AvroSchema:
        try:
            return self._schemas[full_name(name)]
        except KeyError:
            raise SchemaNotFoundError(
                f"unknown contract {name!r}; expected one of {', '.join(SCHEMA_NAMES)}"
            ) from None


def codec_from_settings(settings: Settings) -> AvroCodec:
    """A registry-backed codec when ``schema_registry_url`` is set, else a local one."""
    if not settings.schema_registry_url:
        return AvroCodec(LocalCatalog())
    catalog = SchemaRegistryCatalog(
        settings.schema_registry_url,
        subjects=registry_subjects(settings),
        username=settings.schema_registry_username,
        password=settings.schema_registry_password,
        timeout_s=settings.timeouts.kafka_request_s,
    )
    return AvroCodec(catalog)


#: The TopicSettings field naming the topic each contract is written to (one record per topic;
#: retry and dead-letter topics carry copies of the original bytes, so they register nothing).
TOPIC_OF: Mapping[str, str] = {
    "AgentRequest": "requests",
    "GenerationTurn": "generation",
    "ToolCallBatch": "tool_calls",
    "AgentResponse": "responses",
    "ErrorEvent": "errors",
    "MetricsEvent": "metrics",
    "StreamDelta": "stream",
    "Feedback": "feedback",
    "CancelRequest": "control",
    "ApprovalRequest": "approvals",
    "ApprovalDecision": "approval_decisions",
    "ApprovalAudit": "approval_audit",
    "DelegationResult": "delegation_results",
}


def registry_subjects(settings: Settings) -> dict[str, str]:
    """Full name -> registry subject: ``<topic>-value`` (TopicNameStrategy, the default) or the
    full name itself (RecordNameStrategy), per ``schema_registry_subjects``."""
    if settings.schema_registry_subjects == "record":
        return {full_name(name): full_name(name) for name in SCHEMA_NAMES}
    return {
        full_name(name): f"{getattr(settings.topics, TOPIC_OF[name])}-value"
        for name in SCHEMA_NAMES
    }


def _typed(contract: type[C], record: dict[str, Any]) -> C:
    try:
        return msgspec.convert(record, contract)
    except msgspec.ValidationError as exc:  # a record the schema allows but the type does not
        raise SerializationError(f"{contract.schema}: {exc}") from exc


def _read(data: bytes, schema_id: int, writer: AvroSchema, reader: AvroSchema) -> dict[str, Any]:
    if writer.full_name != reader.full_name:
        raise SerializationError(
            f"schema id {schema_id} is {writer.full_name}, expected {reader.full_name}"
        )
    same = writer is reader or writer.text == reader.text
    buffer = io.BytesIO(data)
    buffer.seek(HEADER_SIZE)
    what = f"{reader.full_name} body (schema id {schema_id})"
    try:
        record = fastavro.schemaless_reader(buffer, writer.parsed, None if same else reader.parsed)
    except (EOFError, IndexError) as exc:
        raise SerializationError(f"truncated or malformed {what}") from exc
    except SchemaResolutionError as exc:
        raise SerializationError(f"cannot resolve {what} to the current schema: {exc}") from exc
    except (ValueError, TypeError, KeyError, OverflowError, MemoryError) as exc:
        raise SerializationError(f"malformed {what}: {type(exc).__name__}") from exc
    trailing = len(data) - buffer.tell()
    if trailing:
        raise SerializationError(f"{trailing} trailing bytes after {what}")
    if not isinstance(record, dict):
        raise SerializationError(f"{what} did not decode to a record")
    return record


def _check_record(
    schema: AvroSchema, record: Mapping[str, Any], timestamps: Iterable[_Path]
) -> None:
    """Validate types (fastavro's writer silently truncates floats, accepts bools as ints...)."""
    try:
        validate(record, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        raise SerializationError(_describe(schema.full_name, exc)) from exc
    for path in timestamps:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, datetime) and value.tzinfo is None:
            raise SerializationError(
                f"{schema.full_name}: field {'.'.join(path)} is a naive datetime; "
                "pass a timezone-aware (UTC) datetime"
            )


def _describe(name: str, exc: ValidationError) -> str:
    """A reason naming the field, the expected type(s) and the actual type, not the value."""
    errors = exc.errors
    if not errors:
        return f"{name}: record does not match the schema"
    field = errors[0].field
    datum = errors[0].datum
    expected = [_type_name(error.schema) for error in errors if error.field == field]
    got = "missing or null" if datum is None else f"got {type(datum).__name__}"
    if type(datum) is int and expected in (["int"], ["long"]):
        got = f"got an int outside the {expected[0]} range"
    wanted = expected[0] if len(expected) == 1 else "one of " + " | ".join(expected)
    return f"{name}: field {field} {got}, expected {wanted}"


def _type_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " | ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        if "logicalType" in schema:
            return str(schema["logicalType"])
        if kind == "array":
            return f"array<{_type_name(schema['items'])}>"
        if kind == "map":
            return f"map<{_type_name(schema['values'])}>"
        return str(schema.get("name", kind))
    return str(schema)


def _timestamp_paths(schema: Any, prefix: _Path = ()) -> Iterable[_Path]:
    """Paths to timestamp fields reachable through records and nullable unions."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _timestamp_paths(branch, prefix)
    elif isinstance(schema, Mapping):
        if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            yield prefix
        elif schema.get("type") == "record":
            for field in schema["fields"]:
                yield from _timestamp_paths(field["type"], (*prefix, field["name"]))

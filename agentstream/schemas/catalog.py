"""Schema catalogs: which id a record is written under, and which schema an id names.

:class:`SchemaCatalog` is the interface the codec uses. :class:`LocalCatalog` has fixed ids for
the built-in contracts and needs no network; ``registry.SchemaRegistryCatalog`` asks a
Confluent-compatible Schema Registry.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import Any

from agentstream.schemas.exceptions import SchemaNotFoundError, SerializationError
from agentstream.schemas.loader import (
    SCHEMA_NAMES,
    AvroSchema,
    builtin_schemas,
    canonical,
    full_name,
    released_schemas,
)


def _writer_ids() -> dict[str, int]:
    """The id each current contract is written under: the released version it equals (same
    Parsing Canonical Form), else a provisional id after every released one (an unreleased
    change; ``make schemas-release`` freezes it)."""
    released = {canonical(schema): i for i, schema in released_schemas().items()}
    next_id = max(released_schemas(), default=0) + 1
    ids: dict[str, int] = {}
    for name in SCHEMA_NAMES:
        schema = builtin_schemas()[full_name(name)]
        known = released.get(canonical(schema))
        if known is None:
            known, next_id = next_id, next_id + 1
        ids[schema.full_name] = known
    return ids


#: The id each built-in contract is written under in a :class:`LocalCatalog` (by full name).
LOCAL_IDS: Mapping[str, int] = _writer_ids()


class SchemaCatalog(abc.ABC):
    """Maps record full names to writer schema ids, and ids to writer schemas."""

    @abc.abstractmethod
    async def prepare(self, schemas: Iterable[AvroSchema]) -> None:
        """Make ids known for ``schemas`` (register them, or check they are known)."""

    @abc.abstractmethod
    def id_for(self, name: str) -> int:
        """The id to write ``name`` (a full name) under; SchemaNotFoundError if none."""

    @abc.abstractmethod
    def schema_for_id(self, schema_id: int) -> AvroSchema | None:
        """The schema for ``schema_id`` if it is known without I/O."""

    async def fetch(self, schema_id: int) -> AvroSchema:
        """The schema for ``schema_id``, fetching it if needed; SchemaNotFoundError if unknown."""
        schema = self.schema_for_id(schema_id)
        if schema is None:
            raise SchemaNotFoundError(f"unknown schema id {schema_id}")
        return schema

    async def aclose(self) -> None:
        """Release connections, if any."""
        return None


class LocalCatalog(SchemaCatalog):
    """In-process catalog: built-ins written under :data:`LOCAL_IDS`; every released version
    (``schemas/released/``) and explicitly registered extras readable by their ids.

    Released and registered versions are readable by id but never used for writing.
    """

    def __init__(self) -> None:
        builtins = builtin_schemas()
        self._ids: dict[str, int] = dict(LOCAL_IDS)
        self._by_id: dict[int, AvroSchema] = dict(released_schemas())
        self._by_id.update({i: builtins[name] for name, i in LOCAL_IDS.items()})

    async def prepare(self, schemas: Iterable[AvroSchema]) -> None:
        for schema in schemas:
            self.id_for(schema.full_name)

    def id_for(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise SchemaNotFoundError(f"no schema id for {name} in the local catalog") from None

    def schema_for_id(self, schema_id: int) -> AvroSchema | None:
        return self._by_id.get(schema_id)

    def register(self, schema: AvroSchema | Mapping[str, Any], schema_id: int | None = None) -> int:
        """Make ``schema`` readable under ``schema_id`` (default: next free id); returns the id.

        Registering the same schema text again returns its id; an id already used by a
        different schema raises SerializationError.
        """
        if not isinstance(schema, AvroSchema):
            schema = AvroSchema.from_definition(schema)
        for known_id, known in self._by_id.items():
            if known.text == schema.text and schema_id in (None, known_id):
                return known_id
        if schema_id is None:
            schema_id = max(self._by_id) + 1
        elif schema_id in self._by_id:
            raise SerializationError(f"schema id {schema_id} is already used by another schema")
        self._by_id[schema_id] = schema
        return schema_id

"""A catalog backed by a Confluent-compatible Schema Registry (REST API, httpx).

Each contract is registered under the subject ``subjects`` names for it: with
TopicNameStrategy (the default, see :func:`agentstream.schemas.codec.registry_subjects`) the
topic it is written to plus ``-value`` (``agent.requests-value``); with RecordNameStrategy its
full name (``io.agentstream.AgentRequest``). Registered ids and fetched schemas are cached for
the life of the catalog (ids are immutable in a registry).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from agentstream.config import mask_url
from agentstream.schemas.catalog import SchemaCatalog
from agentstream.schemas.exceptions import (
    SchemaNotFoundError,
    SchemaRegistryError,
    SerializationError,
)
from agentstream.schemas.loader import AvroSchema

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_HEADERS = {"Content-Type": CONTENT_TYPE, "Accept": f"{CONTENT_TYPE}, application/json"}


class SchemaRegistryCatalog(SchemaCatalog):
    """Registers the contracts under their subjects and fetches writer schemas by id.

    ``subjects`` maps a record's full name to its subject; a record not in it is registered
    under its full name (RecordNameStrategy)."""

    def __init__(
        self,
        url: str,
        *,
        subjects: Mapping[str, str] | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = mask_url(url)
        auth = None
        if username is not None:
            secret = password.get_secret_value() if password is not None else ""
            auth = httpx.BasicAuth(username, secret)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=url, auth=auth, timeout=timeout_s, headers=_HEADERS
        )
        self._subjects = dict(subjects or {})
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, AvroSchema] = {}
        self._fetch_lock = asyncio.Lock()

    async def prepare(self, schemas: Iterable[AvroSchema]) -> None:
        for schema in schemas:
            if schema.full_name not in self._ids:
                await self.register(schema)

    async def register(self, schema: AvroSchema) -> int:
        """Register ``schema`` under its subject (idempotent); returns the id."""
        subject = quote(self.subject(schema.full_name), safe="")
        body = {"schema": schema.text, "schemaType": "AVRO"}
        data = await self._request("POST", f"/subjects/{subject}/versions", schema.full_name, body)
        schema_id = data.get("id")
        if not isinstance(schema_id, int):
            raise SchemaRegistryError(f"schema registry returned no id for {schema.full_name}")
        self._ids[schema.full_name] = schema_id
        self._by_id[schema_id] = schema
        return schema_id

    def subject(self, name: str) -> str:
        """The subject the record ``name`` (a full name) is registered under."""
        return self._subjects.get(name, name)

    def id_for(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise SchemaNotFoundError(
                f"{name} has no schema registry id yet; await codec.prepare() first"
            ) from None

    def schema_for_id(self, schema_id: int) -> AvroSchema | None:
        return self._by_id.get(schema_id)

    async def fetch(self, schema_id: int) -> AvroSchema:
        async with self._fetch_lock:
            cached = self._by_id.get(schema_id)
            if cached is not None:
                return cached
            data = await self._request("GET", f"/schemas/ids/{schema_id}", f"schema id {schema_id}")
            if data.get("schemaType", "AVRO") != "AVRO":
                raise SerializationError(f"schema id {schema_id} is not an Avro schema")
            if data.get("references"):
                raise SerializationError(f"schema id {schema_id} uses unsupported references")
            text = data.get("schema")
            if not isinstance(text, str):
                raise SchemaRegistryError(f"schema registry returned no schema for id {schema_id}")
            schema = AvroSchema.from_text(text)
            self._by_id[schema_id] = schema
            return schema

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _request(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._client.request(
                method, path, content=None if body is None else json.dumps(body)
            )
        except httpx.HTTPError as exc:
            raise SchemaRegistryError(
                f"schema registry {self._url} unreachable ({type(exc).__name__}) for {what}"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if response.is_success:
            return data
        detail = f"HTTP {response.status_code}, error_code {data.get('error_code')}: "
        detail += str(data.get("message", response.reason_phrase))
        if response.status_code == 404:
            raise SchemaNotFoundError(f"{what} not found in schema registry ({detail})")
        if response.status_code >= 500 or response.status_code == 429:
            raise SchemaRegistryError(f"schema registry failed for {what} ({detail})")
        raise SerializationError(f"schema registry rejected {what} ({detail})")

"""SchemaRegistryCatalog against a local HTTP server speaking the Confluent Schema Registry API.

The server below is a wire-format fake of the REST subset the catalog uses (register a version,
fetch a schema by id), served over real HTTP; it is not a mock of the client.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import fastavro
import pytest
from aiohttp import web
from pydantic import SecretStr

from agentstream.config import Settings
from agentstream.schemas.codec import SCHEMA_NAMES, AvroCodec, codec_from_settings
from agentstream.schemas.exceptions import (
    SchemaNotFoundError,
    SchemaRegistryError,
    SerializationError,
)
from agentstream.schemas.loader import builtin_schemas
from agentstream.schemas.registry import CONTENT_TYPE, SchemaRegistryCatalog
from agentstream.streams.topology import contract_for_topic

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
REQUEST = {
    "request_id": "req-1",
    "session_id": "sess-1",
    "user_id": "user-1",
    "tenant_id": "acme",
    "message": "hello",
    "allowed_tools": ["clock"],
    "metadata": {"channel": "cli"},
    "created_at": NOW,
    "deadline": None,
    "previous_response_id": None,
    "stream": None,
    "agent": None,
}


@dataclass
class FakeRegistry:
    """In-memory Confluent Schema Registry: ids are global, schemas deduplicated by text."""

    username: str = "svc"
    password: str = "s3cret"
    next_id: int = 100
    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    reject_subject: str | None = None

    def add(self, subject: str, text: str) -> int:
        known = {schema: schema_id for schema_id, schema in self.schemas.items()}
        schema_id = known.get(text)
        if schema_id is None:
            schema_id = self.next_id
            self.next_id += 1
            self.schemas[schema_id] = text
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._check_auth])
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_get("/schemas/ids/{schema_id}", self._get_schema)
        return app

    @web.middleware
    async def _check_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {token}":
            return _error(401, 40101, "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    async def _register(self, request: web.Request) -> web.Response:
        if request.content_type != CONTENT_TYPE:
            return _error(415, 415, "Unsupported media type")
        body = await request.json()
        subject = request.match_info["subject"]
        if subject == self.reject_subject:
            return _error(409, 409, "Schema being registered is incompatible")
        if body.get("schemaType", "AVRO") != "AVRO":
            return _error(422, 42201, "Invalid schema")
        fastavro.parse_schema(json.loads(body["schema"]))  # a real registry validates too
        return _json({"id": self.add(subject, body["schema"])})

    async def _get_schema(self, request: web.Request) -> web.Response:
        schema_id = int(request.match_info["schema_id"])
        if schema_id not in self.schemas:
            return _error(404, 40403, "Schema not found")
        return _json({"schema": self.schemas[schema_id]})


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload), content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"error_code": code, "message": message}, status)


@pytest.fixture
async def registry() -> AsyncIterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _codec(
    url: str, password: str = "s3cret", subjects: Literal["topic", "record"] = "topic"
) -> AvroCodec:
    settings = Settings(
        schema_registry_url=url,
        schema_registry_username="svc",
        schema_registry_password=SecretStr(password),
        schema_registry_subjects=subjects,
    )
    return codec_from_settings(settings)


TOPIC_SUBJECTS = {
    "agent.requests-value": "io.agentstream.AgentRequest",
    "agent.generation-value": "io.agentstream.GenerationTurn",
    "agent.tool-calls-value": "io.agentstream.ToolCallBatch",
    "agent.responses-value": "io.agentstream.AgentResponse",
    "agent.errors-value": "io.agentstream.ErrorEvent",
    "agent.metrics-value": "io.agentstream.MetricsEvent",
    "agent.stream-value": "io.agentstream.StreamDelta",
    "agent.feedback-value": "io.agentstream.Feedback",
    "agent.control-value": "io.agentstream.CancelRequest",
    "agent.approvals-value": "io.agentstream.ApprovalRequest",
    "agent.approval-decisions-value": "io.agentstream.ApprovalDecision",
    "agent.approval-audit-value": "io.agentstream.ApprovalAudit",
    "agent.delegation-results-value": "io.agentstream.DelegationResult",
}


@pytest.mark.parametrize("strategy", ["topic", "record"])
async def test_prepare_registers_every_contract(
    registry: tuple[FakeRegistry, str], strategy: Literal["topic", "record"]
) -> None:
    fake, url = registry
    codec = _codec(url, subjects=strategy)
    await codec.prepare()
    await codec.prepare()  # ids are cached: no second round of requests
    await codec.aclose()

    if strategy == "topic":  # TopicNameStrategy, the default: <topic>-value
        expected = TOPIC_SUBJECTS
    else:  # RecordNameStrategy: the record's full name
        expected = {f"io.agentstream.{name}": f"io.agentstream.{name}" for name in SCHEMA_NAMES}
    assert set(fake.subjects) == set(expected)
    assert len(fake.requests) == len(SCHEMA_NAMES)
    for subject, (schema_id,) in fake.subjects.items():
        record = expected[subject]
        assert json.loads(fake.schemas[schema_id]) == builtin_schemas()[record].definition


def test_topic_subjects_follow_the_topology() -> None:
    """Each contract's subject names the one topic the topology writes it to."""
    settings = Settings()
    for subject, record in TOPIC_SUBJECTS.items():
        contract = contract_for_topic(settings, subject.removesuffix("-value"))
        assert contract is not None
        assert f"io.agentstream.{contract.schema}" == record


async def test_encode_uses_registry_ids(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    codec = _codec(url)
    await codec.prepare()
    data = codec.encode("AgentRequest", REQUEST)
    assert AvroCodec.peek_schema_id(data) == fake.subjects["agent.requests-value"][0]
    assert AvroCodec.peek_schema_id(data) >= 100
    assert codec.decode("AgentRequest", data) == REQUEST
    await codec.aclose()


async def test_consumer_fetches_unknown_writer_id(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    producer = _codec(url)
    await producer.prepare()
    data = producer.encode("AgentRequest", REQUEST)
    await producer.aclose()

    consumer = _codec(url)  # never prepared: knows no ids yet
    with pytest.raises(SchemaNotFoundError, match="use decode_async"):
        consumer.decode("AgentRequest", data)
    fake.requests.clear()
    assert await consumer.decode_async("AgentRequest", data) == REQUEST
    assert await consumer.decode_async("AgentRequest", data) == REQUEST
    assert fake.requests == [("GET", f"/schemas/ids/{AvroCodec.peek_schema_id(data)}")]
    assert consumer.decode("AgentRequest", data) == REQUEST  # cached now
    await consumer.aclose()


async def test_old_writer_version_from_registry(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    old = copy.deepcopy(dict(builtin_schemas()["io.agentstream.AgentRequest"].definition))
    old["fields"] = [f for f in old["fields"] if f["name"] != "deadline"]
    old_id = fake.add("io.agentstream.AgentRequest", json.dumps(old))
    record = {k: v for k, v in REQUEST.items() if k != "deadline"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), record)

    codec = _codec(url)
    await codec.prepare()
    decoded = await codec.decode_async(
        "AgentRequest", struct.pack(">bI", 0, old_id) + body.getvalue()
    )
    assert decoded == REQUEST  # deadline filled from the reader's default
    await codec.aclose()


async def test_unknown_id_is_not_found(registry: tuple[FakeRegistry, str]) -> None:
    _, url = registry
    codec = _codec(url)
    with pytest.raises(SchemaNotFoundError, match="schema id 4242 not found") as info:
        await codec.decode_async("AgentRequest", struct.pack(">bI", 0, 4242) + b"\x00")
    assert not info.value.retriable
    await codec.aclose()


async def test_encode_before_prepare(registry: tuple[FakeRegistry, str]) -> None:
    _, url = registry
    codec = _codec(url)
    with pytest.raises(SchemaNotFoundError, match="prepare"):
        codec.encode("AgentRequest", REQUEST)
    await codec.aclose()


async def test_wrong_password_is_rejected(registry: tuple[FakeRegistry, str]) -> None:
    _, url = registry
    codec = _codec(url, password="wrong")
    with pytest.raises(SerializationError, match="HTTP 401") as info:
        await codec.prepare()
    assert "wrong" not in info.value.reason
    await codec.aclose()


async def test_incompatible_schema_is_rejected(registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    fake.reject_subject = "agent.errors-value"
    codec = _codec(url)
    with pytest.raises(SerializationError, match=r"HTTP 409.*incompatible") as info:
        await codec.prepare()
    assert not info.value.retriable
    await codec.aclose()


async def test_unreachable_registry_is_retriable() -> None:
    catalog = SchemaRegistryCatalog(
        "http://user:pw@127.0.0.1:1", username="svc", password=SecretStr("x"), timeout_s=2
    )
    with pytest.raises(SchemaRegistryError) as info:
        await AvroCodec(catalog).prepare()
    assert info.value.retriable
    assert "pw" not in info.value.reason
    await catalog.aclose()

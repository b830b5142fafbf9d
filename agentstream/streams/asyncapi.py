"""The pipeline as an AsyncAPI 3 document, generated from the topology (``agentstream asyncapi``).

One channel per topic of :func:`~agentstream.streams.topology.pipeline_topics` (stage topics,
outputs, dead-letter and retry topics), one message per contract with its Avro schema (the
current version, self-contained), its Kafka key and, on dead-letter and retry topics, its
headers. Operations are the service's: each stage receives its topic, the stages send the
records they produce. The committed docs/asyncapi.yaml is this document for the default
settings; tests/test_asyncapi.py fails when it is stale.
"""

from __future__ import annotations

from typing import Any

import yaml

from agentstream import __version__
from agentstream.config import Settings
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.catalog import LOCAL_IDS
from agentstream.schemas.loader import builtin_schemas, full_name
from agentstream.streams.topology import RETRY, STAGES

ASYNCAPI_VERSION = "3.0.0"
AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
KAFKA_BINDING = "0.5.0"

#: Every header agentstream sets, and what it carries (values are UTF-8 text).
HEADER_DOCS: dict[str, str] = {
    dl.ORIGINAL_TOPIC: "Topic of the failed record.",
    dl.ORIGINAL_PARTITION: "Partition of the failed record.",
    dl.ORIGINAL_OFFSET: "Offset of the failed record.",
    dl.ORIGINAL_TIMESTAMP: "Timestamp of the failed record (ms since epoch).",
    dl.ORIGINAL_GROUP: "Consumer group that failed it.",
    dl.EXCEPTION_FQCN: "Fully qualified class of the error that failed it.",
    dl.EXCEPTION_MESSAGE: "Error message (never the payload), at most 1000 characters.",
    dl.ERROR_CODE: "Stable error code (docs/contract.md, Error codes).",
    dl.ERROR_CAUSE: "Code of the failure behind the error code, when it is a consequence.",
    dl.STAGE: "Stage that failed: validation, generation or tools.",
    dl.ATTEMPT: "Failed deliveries so far.",
    dl.DLT_TIME: "When it was dead-lettered (ms since epoch).",
    dl.PAYLOAD_OMITTED: "Size of the original value, when it was left out to fit the broker.",
    dl.HEADERS_OMITTED: "How many of the original's headers were left out to fit the broker.",
    dl.KEY_OMITTED: "Size of the original key, when it was left out to fit the broker.",
    dl.RETRY_DUE: "When the record is due for its next attempt (ms since epoch).",
    dl.RETRY_ORIGIN: "Topic the record goes back to when due.",
    dl.RETRY_REASON: "Error code of the failure being retried.",
    dl.REPLAYED_FROM: "<dlq topic>/<partition>/<offset> of the dead letter it was replayed from.",
}
_KEY_DOC = {
    "AgentRequest": "session_id (UTF-8): a session's records share a partition, in order.",
    "ErrorEvent": "session_id (UTF-8); for an undecodable record, that record's own key.",
}


def _headers(names: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string", "description": HEADER_DOCS[n]} for n in names},
        "required": list(required),
    }


def _message(name: str, variant: str = "", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = builtin_schemas()[full_name(name)]
    key = _KEY_DOC.get(name, "session_id (UTF-8), the key of the request it belongs to.")
    message: dict[str, Any] = {
        "name": f"{name}{variant}",
        "title": f"{name}{variant}",
        "summary": str(schema.definition.get("doc", "")),
        "contentType": "application/vnd.apache.avro+binary",
        "description": (
            "Confluent wire format: byte 0, the writer schema id (4 bytes, big-endian; "
            f"{LOCAL_IDS[schema.full_name]} in the built-in catalog, else the registry's), "
            "then the Avro binary body."
        ),
        "payload": {"schemaFormat": AVRO_FORMAT, "schema": schema.definition},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": key},
                "schemaIdLocation": "payload",
                "schemaIdPayloadEncoding": "confluent",
                "schemaLookupStrategy": "TopicNameStrategy",
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }
    if headers is not None:
        message["headers"] = headers
    return message


def _channel(address: str, message: str, settings: Settings, about: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": about,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {
            "kafka": {
                "topic": address,
                "partitions": settings.topics.partitions,
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _operation(action: str, channel: str, summary: str) -> dict[str, Any]:
    return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary}


def _stage_parts(settings: Settings) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Channels, messages and operations of the stage topics and their DLQ and retry topics."""
    t = settings.topics
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    dlq_headers = _headers(
        (*dl.DLQ_HEADERS, *dl.OMITTED_HEADERS, dl.REPLAYED_FROM),
        required=tuple(h for h in dl.DLQ_HEADERS if h != dl.ERROR_CAUSE),
    )
    for spec in STAGES:
        name = spec.contract.schema
        topic = spec.topic(settings)
        messages[name] = _message(name)
        messages[f"{name}DeadLetter"] = _message(name, "DeadLetter", dlq_headers)
        about = f"{name}s the {spec.name} stage runs."
        channels[spec.name] = _channel(topic, name, settings, about)
        operations[f"{spec.name}Receive"] = _operation(
            "receive", spec.name, f"The {spec.name} stage consumes {topic}."
        )
        channels[f"{spec.name}Dlq"] = _channel(
            spec.dlq(settings),
            f"{name}DeadLetter",
            settings,
            f"{name}s the {spec.name} stage gave up on: the original bytes and key, with headers.",
        )
        operations[f"{spec.name}DeadLetter"] = _operation(
            "send", f"{spec.name}Dlq", f"Dead letters of the {spec.name} stage."
        )
        if not spec.retry_tiers:
            continue
        messages[f"{name}Retry"] = _message(
            name, "Retry", _headers(dl.RETRY_HEADERS, required=dl.RETRY_HEADERS)
        )
        for tier, seconds in enumerate(t.retry_tiers_s):
            channel = f"{spec.name}Retry{tier + 1}"
            channels[channel] = _channel(
                t.retry_topic(topic, tier),
                f"{name}Retry",
                settings,
                f"{name}s waiting {seconds:g} s for attempt {tier + 2} (retry tier {tier + 1}).",
            )
            operations[f"{channel}Send"] = _operation(
                "send", channel, f"The {spec.name} stage defers a transient failure."
            )
            operations[f"{channel}Receive"] = _operation(
                "receive", channel, f"The {RETRY} forwarder returns it to {topic} when due."
            )
    return channels, messages, operations


_OUTPUTS = (
    ("responses", "AgentResponse", "The answer (or failure) of every request, once."),
    ("errors", "ErrorEvent", "One event per failure, for alerting."),
    ("metrics", "MetricsEvent", "One event per finished request (and per feedback)."),
    (
        "stream",
        "StreamDelta",
        "A streaming request's answer as it is written, keyed by session_id; the deltas of a "
        "turn's highest attempt concatenate to its content.",
    ),
    (
        "approvals",
        "ApprovalRequest",
        "Tool calls waiting for a person's approval (with arguments).",
    ),
    ("approval_audit", "ApprovalAudit", "One audit event per approval decision received."),
)

#: Channel ids of outputs whose topic field would clash with a stage's channel id.
_CHANNEL_IDS = {"approvals": "approvalRequests", "approval_audit": "approvalAudit"}


def document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3 document of the pipeline under ``settings``' topic names."""
    channels, messages, operations = _stage_parts(settings)
    for field, name, about in _OUTPUTS:
        channel = _CHANNEL_IDS.get(field, field)
        messages[name] = _message(name)
        channels[channel] = _channel(getattr(settings.topics, field), name, settings, about)
        operations[f"{channel}Send"] = _operation("send", channel, about)
    # cancel requests: clients send them, every worker reads the whole topic (streams/control.py)
    messages["CancelRequest"] = _message("CancelRequest")
    about = "Cancel requests, keyed by request_id; every worker reads all of them."
    channels["control"] = _channel(settings.topics.control, "CancelRequest", settings, about)
    operations["controlReceive"] = _operation("receive", "control", about)
    for spec in STAGES[1:]:  # stage topics other stages write to
        operations[f"{spec.name}Send"] = _operation(
            "send", spec.name, f"A {spec.contract.schema} for the {spec.name} stage."
        )
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "agentstream",
            "version": __version__,
            "description": (
                "AI agents on Kafka. Clients publish an AgentRequest to the requests channel, "
                "keyed by session_id with Java's murmur2 partitioner, and read the "
                "AgentResponse with the same request_id from the responses channel. "
                "The contract in prose: docs/contract.md. Generated by `agentstream asyncapi`."
            ),
        },
        "defaultContentType": "application/vnd.apache.avro+binary",
        "servers": {
            "local": {
                "host": settings.kafka_bootstrap_servers or "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The cluster in AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(settings: Settings) -> str:
    """The document as YAML, in a stable order (the committed file is compared as text)."""
    text: str = yaml.safe_dump(document(settings), sort_keys=False, allow_unicode=True, width=100)
    return "# Generated by `agentstream asyncapi` from agentstream/streams/topology.py.\n" + text

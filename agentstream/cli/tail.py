"""``agentstream tail TOPIC``: print a topic's records decoded (JSON lines), with DLQ headers."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, load_cli_settings, until_signal

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

    from agentstream.config import Settings
    from agentstream.schemas.codec import AvroCodec


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def render(settings: Settings, codec: AvroCodec, record: Any) -> dict[str, Any]:
    from agentstream.schemas.dead_letter import header_map
    from agentstream.schemas.exceptions import SerializationError
    from agentstream.streams.replay import schema_for_topic

    out: dict[str, Any] = {"partition": record.partition, "offset": record.offset}
    if record.key is not None:
        out["key"] = record.key.decode(errors="replace")
    if record.headers:
        out["headers"] = header_map(list(record.headers))
    schema = schema_for_topic(settings, record.topic)
    if schema is None:
        out["value_bytes"] = len(record.value or b"")
        return out
    try:
        out["value"] = codec.decode(schema, record.value or b"")
    except SerializationError as exc:
        out["undecodable"] = exc.reason if hasattr(exc, "reason") else str(exc)
        out["value_bytes"] = len(record.value or b"")
    return out


def tail(
    topic: Annotated[
        str, typer.Argument(help="Topic, e.g. agent.responses or agent.requests.dlq.")
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    limit: Annotated[
        int, typer.Option("--max", help="Stop after this many records (0 = no limit).")
    ] = 0,
    idle_timeout: Annotated[
        float, typer.Option(help="Stop after this many seconds without records (0 = never).")
    ] = 0.0,
) -> None:
    """Follow a topic and print each record decoded, one JSON object per line."""
    from aiokafka import AIOKafkaConsumer

    from agentstream.schemas.codec import codec_from_settings
    from agentstream.streams.kafka_config import client_kwargs
    from agentstream.streams.preflight import check_topics

    settings = load_cli_settings()

    async def main(stop: asyncio.Event) -> None:
        # Kafka reachable, and the topic exists (a metadata request would auto-create a typo)
        await check_topics(settings, [topic], named_by="the TOPIC argument")
        codec = codec_from_settings(settings)
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
        try:
            await codec.prepare()
            await consumer.start()
            await _assign(consumer, topic, from_beginning)
            seen = 0
            idle = 0.0
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                if not batches:
                    idle += 0.2
                    if idle_timeout and idle >= idle_timeout:
                        return
                    continue
                idle = 0.0
                for record in (r for records in batches.values() for r in records):
                    line = json.dumps(render(settings, codec, record), default=_jsonable)
                    console.print(line, markup=False)
                    seen += 1
                    if limit and seen >= limit:
                        return
        finally:
            await consumer.stop()
            await codec.aclose()

    asyncio.run(until_signal(main))


async def _assign(consumer: AIOKafkaConsumer, topic: str, from_beginning: bool) -> None:
    """Every partition of ``topic`` (checked to exist), at its start or its end."""
    from agentstream.streams.partitions import all_partitions

    tps = await all_partitions(consumer, topic)
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)

"""``agentstream tail TOPIC``: print a topic's records decoded (JSON lines), with DLQ headers."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.cli.runtime import console, err_console, load_cli_settings, until_signal
from agentstream.config import Settings
from agentstream.schemas.codec import AvroCodec, codec_from_settings
from agentstream.schemas.dead_letter import header_map
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.replay import schema_for_topic


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def render(settings: Settings, codec: AvroCodec, record: Any) -> dict[str, Any]:
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
    settings = load_cli_settings()

    async def main(stop: asyncio.Event) -> None:
        codec = codec_from_settings(settings)
        await codec.prepare()
        consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
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
    """Every partition of ``topic``, at its start or its end; exit 1 if there is no such topic."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        err_console.print(f"[red]topic {topic!r} does not exist[/red]")
        raise typer.Exit(1)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)

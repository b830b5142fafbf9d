"""Valid encodings of every contract from a short in-process pipeline run (mutation seeds)."""

from __future__ import annotations

from collections import defaultdict

from agentstream.client import new_request
from agentstream.streams.topology import contract_for_topic
from agentstream.testing import TestPipeline

_ASKS: tuple[tuple[str, list[str]], ...] = (
    ("what is 17 + 25", ["calculator"]),
    ("what time is it in Tokyo", ["current_time"]),
    ("hello there", []),
    ("add 2 and 3", ["no-such-tool"]),  # refused: ERROR response and error event
    ("[fail] add 1 and 1", []),  # model down: retry tiers, then a dead letter
)


async def seed_records(pipeline: TestPipeline | None = None) -> dict[str, list[bytes]]:
    """Contract name -> distinct valid wire-format records of it, from requests run in
    ``pipeline`` (a fresh one if None; a given one keeps the sessions, so mutated turns of
    them reach a known session)."""
    if pipeline is None:
        async with TestPipeline() as fresh:
            return await seed_records(fresh)
    seeds: dict[str, set[bytes]] = defaultdict(set)
    for n, (message, tools) in enumerate(_ASKS):
        request = new_request(
            message, session_id=f"s{n}", user_id="u", tenant_id="t", allowed_tools=tools
        )
        value = pipeline.codec.encode("AgentRequest", request)
        pipeline.publish_raw(pipeline.settings.topics.requests, value, f"s{n}")
        await pipeline.run_until_quiet()
    for topic, records in pipeline.published.items():
        contract = contract_for_topic(pipeline.settings, topic)
        if contract is None:
            continue
        for record in records:
            if record.value:
                seeds[contract.schema].add(record.value)
    return {name: sorted(values) for name, values in seeds.items()}

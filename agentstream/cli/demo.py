"""Demo traffic for ``agentstream dev --demo``: a few requests through the real pipeline."""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.table import Table

from agentstream.client import AgentClient
from agentstream.config import Settings

DEMO_MESSAGES = (
    "add 2 and 3",
    "what time is it in Tokyo",
    "multiply 6 by 7",
    "hello, who are you?",
)


async def run_demo(settings: Settings, console: Console) -> None:
    console.print(
        "Demo: the offline model is a deterministic rule-based stand-in, not a language model."
    )
    started = time.monotonic()
    async with AgentClient(settings) as client:
        answers = await asyncio.gather(
            *(
                client.ask(
                    message,
                    session_id=f"demo-{i}",
                    user_id="demo-user",
                    tenant_id="demo",
                    timeout=30,
                )
                for i, message in enumerate(DEMO_MESSAGES)
            )
        )
    table = Table(title=f"Demo answers ({time.monotonic() - started:.2f}s)")
    for column in ("request", "state", "answer", "tools", "ms"):
        table.add_column(column)
    for message, answer in zip(DEMO_MESSAGES, answers, strict=True):
        tools = ", ".join(c["name"] for c in answer.tool_calls) or "-"
        table.add_row(message, answer.state, answer.content, tools, str(answer.execution_time_ms))
    console.print(table)
    console.print(
        "Try: agentstream send 'add 40 and 2' --wait  (in another terminal, with the "
        "addresses above exported as AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS / "
        "AGENTSTREAM_REDIS_URL). Ctrl-C to stop."
    )

"""``agentstream send``: publish one request, optionally wait for and print its answer."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, err_console, load_cli_settings

if TYPE_CHECKING:
    from agentstream.client import AgentClient, AgentResponse


def send(
    message: Annotated[str, typer.Argument(help="The user message.")],
    session: Annotated[str | None, typer.Option(help="Session id (default: a new one).")] = None,
    user: Annotated[str, typer.Option(help="User id.")] = "cli-user",
    tenant: Annotated[str, typer.Option(help="Tenant id.")] = "default",
    tool: Annotated[
        list[str] | None, typer.Option("--tool", help="Allow only this tool (repeatable).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="The agent that answers (default: the default agent).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the answer.")] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print the answer as it is written (implies --wait).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 60.0,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Bypass the response cache and the tool result cache for this request "
            "(request metadata cache=bypass).",
        ),
    ] = False,
) -> None:
    """Publish an AgentRequest to the requests topic."""
    from agentstream.admission.cache import BYPASS, CACHE_METADATA_KEY
    from agentstream.client import AgentClient, new_request
    from agentstream.streams.preflight import check_topics

    settings = load_cli_settings()
    request = new_request(
        message,
        session_id=session or f"cli-{uuid.uuid4().hex[:12]}",
        user_id=user,
        tenant_id=tenant,
        allowed_tools=tool or (),
        metadata={CACHE_METADATA_KEY: BYPASS} if no_cache else None,
        stream=True if stream else None,
        agent=agent,
    )
    wait = wait or stream

    async def run() -> AgentResponse | None:
        topics = [settings.topics.requests, *([settings.topics.responses] if wait else [])]
        topics += [settings.topics.stream] if stream else []
        await check_topics(settings, topics)
        async with AgentClient(settings) as client:
            if not wait:
                await client.submit(request)
                return None
            if stream:
                return await print_stream(client, request, timeout)
            return await client.request(request, timeout=timeout)

    try:
        response = asyncio.run(run())
    except TimeoutError as exc:
        err_console.print(
            f"[red]no answer within {timeout}s[/red] (request {request['request_id']})"
        )
        raise typer.Exit(2) from exc
    if response is None:
        console.print(f"sent request {request['request_id']} (session {request['session_id']})")
        return
    style = "green" if response.ok else "red"
    shown = "" if stream and response.ok else f" {response.content}"
    console.print(f"[{style}]{response.state}[/{style}]{shown}")
    if response.error_code:
        console.print(f"error code: {response.error_code}")
    tools = ", ".join(c["name"] for c in response.tool_calls) or "none"
    served = f"{response.agent}@{response.agent_version}" if response.agent else "-"
    console.print(
        f"[dim]request {response.request_id} · session {response.session_id} · "
        f"{response.execution_time_ms} ms · tools: {tools} · agent: {served}[/dim]"
    )
    if not response.ok:
        raise typer.Exit(1)


async def print_stream(
    client: AgentClient, request: dict[str, Any], wait_s: float
) -> AgentResponse | None:
    """Print the deltas as they arrive; a retried model call starts the text over."""
    from agentstream.client import AgentResponse
    from agentstream.client_stream import StreamedText

    text = StreamedText()
    async for item in client.stream_request(request, timeout=wait_s):
        if isinstance(item, AgentResponse):
            if text.text:
                console.out("")  # end the streamed line
            return item
        turn = text.turn
        if text.add(item):
            console.out("")
            if item.turn == turn:
                console.print("[dim](the model call was retried; its answer again:)[/dim]")
        console.out(item.text, end="", highlight=False)
        console.file.flush()
    return None

"""``agentstream cancel REQUEST_ID``: stop a request in flight and say what happened."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from agentstream.cli.runtime import console, err_console, load_cli_settings

if TYPE_CHECKING:
    from agentstream.cancel_client import CancelResult


def cancel(
    request_id: Annotated[str, typer.Argument(help="The request to stop.")],
    tenant: Annotated[str, typer.Option(help="The request's tenant id.")] = "default",
    session: Annotated[
        str | None, typer.Option(help="The request's session (found by the pipeline if unset).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who asks (recorded).")] = "cli",
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the outcome (0: none).")] = 10.0,
) -> None:
    """Publish a CancelRequest to the control topic; exit 0 when the request was stopped, 1 when
    there was nothing to stop (finished or unknown), 2 when no outcome was seen in time."""
    from agentstream.cancel_client import CancelOutcome
    from agentstream.client import AgentClient
    from agentstream.streams.preflight import check_topics

    settings = load_cli_settings()

    async def run() -> CancelResult:
        t = settings.topics
        await check_topics(settings, [t.control, t.responses, t.errors])
        async with AgentClient(settings) as client:
            return await client.cancel(
                request_id,
                tenant_id=tenant,
                requested_by=by,
                reason=reason,
                session_id=session,
                wait=wait,
            )

    result = asyncio.run(run())
    took = f"[dim]cancel {result.cancel_id} · {result.seconds:.2f} s[/dim]"
    if result.outcome is CancelOutcome.CANCELLED:
        console.print(f"[green]cancelled[/green] request {request_id} {took}")
        return
    if result.outcome is CancelOutcome.FINISHED:
        state = f" ({result.response.state})" if result.response is not None else ""
        console.print(f"nothing to cancel: request {request_id} had finished{state} {took}")
        raise typer.Exit(1)
    if result.outcome is CancelOutcome.UNKNOWN:
        console.print(
            f"nothing to cancel: no request {request_id} of tenant {tenant} was accepted "
            f"(yet) {took}"
        )
        raise typer.Exit(1)
    if wait > 0:
        err_console.print(f"[yellow]sent; no outcome within {wait:g} s[/yellow] {took}")
        raise typer.Exit(2)
    console.print(f"sent cancel {result.cancel_id} for request {request_id}")

"""``agentstream approvals list|approve|deny``: decide on tool calls waiting for a person.

``list`` shows the pending approvals (``--all``: decided and expired ones too) with each call's
arguments: approvers see them here and on ``agent.approvals`` only; the pipeline never logs
them. ``approve`` / ``deny`` publish a decision; the first decision of an approval counts, a
later one is audited as a duplicate and changes nothing.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import TYPE_CHECKING, Annotated

import typer

from agentstream.cli.runtime import console, load_cli_settings

if TYPE_CHECKING:
    from agentstream.config import Settings
    from agentstream.schemas.codec import AvroCodec
    from agentstream.streams.approvals_admin import ApprovalView

approvals_app = typer.Typer(
    help="Approve or deny tool calls that wait for a person.", no_args_is_help=True
)

ApproverOpt = Annotated[
    str | None,
    typer.Option("--approver", help="Who decides (recorded in the audit); default: your login."),
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why; a denial's reason is shown to the model.")
]


async def _with_codec(settings: Settings) -> AvroCodec:
    from agentstream.schemas.codec import codec_from_settings

    codec = codec_from_settings(settings)
    await codec.prepare()
    return codec


@approvals_app.command("list")
def list_approvals(
    show_all: Annotated[
        bool, typer.Option("--all", help="Also decided and expired approvals.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List pending approvals: id, tool, arguments, session, expiry."""
    from agentstream.streams.approvals_admin import approvals, pending

    settings = load_cli_settings(log=False)

    async def main() -> list[ApprovalView]:
        codec = await _with_codec(settings)
        try:
            found = approvals if show_all else pending
            return await found(settings, codec)
        finally:
            await codec.aclose()

    views = asyncio.run(main())
    if as_json:
        for v in views:
            console.print_json(data=_as_dict(v), indent=None)
        return
    if not views:
        console.print("no pending approvals" if not show_all else "no approvals")
        return
    from rich.table import Table

    table = Table(title="approvals")
    for column in ("approval id", "tool", "arguments", "tenant/session", "expires", "decision"):
        table.add_column(column, overflow="fold")
    for v in views:
        r = v.request
        status = v.decision or ("EXPIRED" if v.expired else "pending")
        table.add_row(
            r.approval_id,
            r.tool,
            r.arguments_json,
            f"{r.tenant_id}/{r.session_id}",
            r.expires_at.isoformat(timespec="seconds"),
            status,
        )
    console.print(table)


def _as_dict(view: ApprovalView) -> dict[str, object]:
    r = view.request
    status = view.decision or ("EXPIRED" if view.expired else "PENDING")
    return {
        "approval_id": r.approval_id,
        "tool": r.tool,
        "arguments": json.loads(r.arguments_json),
        "request_id": r.request_id,
        "tenant_id": r.tenant_id,
        "session_id": r.session_id,
        "user_id": r.user_id,
        "agent": r.agent,
        "expires_at": r.expires_at.isoformat(),
        "status": status,
    }


def _decide(approval_id: str, *, approve: bool, approver: str | None, reason: str | None) -> None:
    from agentstream.streams.approvals_admin import decide

    settings = load_cli_settings(log=False)

    async def main() -> None:
        codec = await _with_codec(settings)
        try:
            await decide(
                settings,
                codec,
                approval_id,
                approve=approve,
                approver_id=approver or getpass.getuser(),
                reason=reason,
            )
        finally:
            await codec.aclose()

    asyncio.run(main())
    verb = "approved" if approve else "denied"
    console.print(f"{verb} {approval_id} (the audit topic records whether it counted)")


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval id `list` shows.")],
    approver: ApproverOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Approve a waiting tool call: it runs (once)."""
    _decide(approval_id, approve=True, approver=approver, reason=reason)


@approvals_app.command("deny")
def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval id `list` shows.")],
    approver: ApproverOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Deny a waiting tool call: it never runs; the model is told it was denied."""
    _decide(approval_id, approve=False, approver=approver, reason=reason)

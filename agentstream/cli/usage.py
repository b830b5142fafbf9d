"""``agentstream usage [--tenant T]``: today's token and cost usage per tenant, the current rate
window, and what remains of each limit."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, load_cli_settings

if TYPE_CHECKING:
    from rich.table import Table

    from agentstream.admission.usage import TenantUsage
    from agentstream.config import Settings


async def collect_usage(settings: Settings, tenant: str | None = None) -> list[TenantUsage]:
    """Usage of ``tenant``, or of every tenant with usage today (and every configured one)."""
    from agentstream.admission.keys import AdmissionKeys
    from agentstream.admission.limits import merged_limits
    from agentstream.admission.usage import read_usage, tenants_with_usage
    from agentstream.state.redis import redis_from_settings

    redis = redis_from_settings(settings)
    keys = AdmissionKeys(settings.state.key_prefix)
    try:
        tenants = (
            [tenant]
            if tenant
            else await tenants_with_usage(redis, keys, settings.admission.tenants)
        )
        return [
            await read_usage(redis, keys, t, merged_limits(settings.admission, t)) for t in tenants
        ]
    finally:
        await redis.aclose()


def usage_as_dict(u: TenantUsage) -> dict[str, Any]:
    return {
        **asdict(u),
        "tokens_remaining": u.tokens_remaining,
        "cost_remaining_usd": u.cost_remaining_usd,
        "window_requests_remaining": u.window_requests_remaining,
        "window_tokens_remaining": u.window_tokens_remaining,
    }


def _of(used: float, limit: float | None, fmt: str = "{:,}") -> str:
    if limit is None:
        return f"{fmt.format(used)} (no limit)"
    left = max(0, limit - used)
    return f"{fmt.format(used)} of {fmt.format(limit)} ({fmt.format(left)} left)"


def usage_table(rows: list[TenantUsage]) -> Table:
    from rich.table import Table

    table = Table(title="Usage today (UTC) and in the current rate window")
    for column in ("tenant", "tokens today", "cost today (USD)", "resets in", "window"):
        table.add_column(column)
    for u in rows:
        hours, rest = divmod(int(u.resets_in_s), 3600)
        table.add_row(
            u.tenant_id,
            _of(u.tokens, u.daily_tokens),
            _of(u.cost_usd, u.daily_cost_usd, "{:,.4f}"),
            f"{hours}h{rest // 60:02d}m",
            f"requests {_of(u.window_requests, u.tenant_requests)}; "
            f"tokens {_of(u.window_tokens, u.tenant_tokens)} per {u.window_s:g}s",
        )
    return table


def usage(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each tenant's token and cost usage today, and what remains of its limits."""
    settings = load_cli_settings()
    rows = asyncio.run(collect_usage(settings, tenant))  # failures: one line (cli/errors.py)
    if as_json:
        console.print(json.dumps([usage_as_dict(u) for u in rows]), markup=False)
    elif not rows:
        console.print("no usage recorded today")
    else:
        console.print(usage_table(rows))

"""``agentstream health``: a worker's ``/healthz`` (from its metrics port), and an exit code.

Exit 0 when the worker is live and ready, 1 when it answers but is not, 2 when it cannot be
reached. Heavy modules are imported inside the command (a fast ``--help``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

UNREACHABLE = 2


def worker_url(url: str | None, metrics_port: int | None) -> str | None:
    """``url``, else this machine's worker on ``AGENTSTREAM_METRICS_PORT``."""
    if url:
        return url if "://" in url else f"http://{url}"
    return f"http://127.0.0.1:{metrics_port}" if metrics_port is not None else None


def health(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="A worker's metrics address, e.g. http://10.0.0.5:9100 "
            "(default: 127.0.0.1 on AGENTSTREAM_METRICS_PORT).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON report.")] = False,
) -> None:
    """Print a worker's health: liveness, readiness and each component."""
    import httpx

    from agentstream.cli.runtime import console, err_console, load_cli_settings

    base = worker_url(url, load_cli_settings().metrics_port)
    if base is None:
        err_console.print(
            "no worker address: pass --url or set AGENTSTREAM_METRICS_PORT (the port the "
            "worker serves /healthz on)"
        )
        raise typer.Exit(UNREACHABLE)
    try:
        report: dict[str, Any] = httpx.get(f"{base.rstrip('/')}/healthz", timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        err_console.print(f"worker at {base} did not answer /healthz: {type(exc).__name__}")
        raise typer.Exit(UNREACHABLE) from exc
    if as_json:
        console.print(json.dumps(report, indent=2), markup=False)
    else:
        for line in summary(report):
            console.print(line, markup=False)
    raise typer.Exit(0 if report.get("status") == "ok" else 1)


def summary(report: dict[str, Any]) -> list[str]:
    """A few readable lines from a ``/healthz`` report."""
    lines = [f"status: {report.get('status')}"]
    for probe in ("live", "ready"):
        reasons = report.get(probe, {}).get("reasons", [])
        lines.append(f"{probe}: {'yes' if not reasons else 'no - ' + '; '.join(reasons)}")
    parts = report.get("components", {})
    if "redis" in parts:
        lines.append(
            f"redis: {'ok' if parts['redis']['ok'] else 'DOWN'} ({parts['redis']['detail']})"
        )
    if "kafka" in parts:
        kafka = parts["kafka"]
        lines.append(f"kafka: group {kafka['group']}, {len(kafka['assigned'])} partitions assigned")
    for kind in ("models", "mcp"):
        for key, breaker in parts.get(kind, {}).get("breakers", {}).items():
            lines.append(f"breaker {key}: {breaker['state']}")
    for server in parts.get("mcp", {}).get("servers", []):
        state = "connected" if server.get("connected") else f"down ({server.get('last_error')})"
        lines.append(f"mcp {server['name']}: {state}")
    if "in_flight" in parts:
        lines.append("in flight: " + ", ".join(f"{k} {v}" for k, v in parts["in_flight"].items()))
    if "lag" in parts:
        lag = parts["lag"]
        lines.append(f"lag: {lag['total']}" + (f" ({lag['error']})" if lag.get("error") else ""))
    return lines

"""The Grafana dashboard and the Prometheus alert rules use only metrics a live worker exports,
and every alert has its runbook section in docs/operations.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentstream.config import Settings
from agentstream.embedded.process import free_port
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA
from tests.support.wait import wait_until
from tests.support.workers import start_worker, stop_worker
from tests.test_health import FAST_HEALTH

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "agentstream.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bagentstream_[a-z0-9_]+\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def used_metric_names() -> set[str]:
    exprs = [*dashboard_exprs(), *(rule["expr"] for rule in alert_rules())]
    return {name for expr in exprs for name in METRIC.findall(expr)}


def exported_names(page: str) -> set[str]:
    """Every sample name a /metrics page can carry, from its TYPE lines (a labelled metric with
    no series yet is still declared) and its samples."""
    names = set()
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update({name, base, *(base + s for s in _SUFFIXES.get(kind, ()))})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_alert_has_a_runbook_section() -> None:
    headings = {
        line.lstrip("#").strip()
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("### ")
    }
    for rule in alert_rules():
        assert rule["alert"] in headings, f"no '### {rule['alert']}' in docs/operations.md"
        anchor = rule["annotations"]["runbook_url"]
        assert anchor == f"docs/operations.md#{rule['alert'].lower()}"
    assert "DLQ replay" in OPERATIONS.read_text()


def test_dashboard_and_rules_are_not_empty() -> None:
    assert len(dashboard_exprs()) >= 10
    assert {r["alert"] for r in alert_rules()} >= {
        "AgentstreamConsumerLagGrowing",
        "AgentstreamDeadLetters",
        "AgentstreamCircuitBreakerOpen",
        "AgentstreamErrorRatio",
        "AgentstreamStageLatencyHigh",
        "AgentstreamBudgetNearlySpent",
    }


@pytest.mark.integration
async def test_every_metric_used_is_exported_by_a_live_worker(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    port = free_port()
    proc = start_worker(settings, {"AGENTSTREAM_METRICS_PORT": str(port), **FAST_HEALTH})
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def lag_exported() -> bool:
                try:
                    page = (await http.get("/metrics")).text
                except httpx.TransportError:
                    return False
                return "agentstream_consumer_lag{" in page

            await wait_until(lag_exported, "the worker's lag gauge", deadline_s=60)
            page = (await http.get("/metrics")).text
    finally:
        stop_worker(proc)
    used = used_metric_names()
    assert len(used) >= 8
    missing = sorted(used - exported_names(page))
    assert not missing, f"used by deploy/ but not exported by a worker: {missing}"

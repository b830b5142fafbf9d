"""The committed AsyncAPI document is the one the topology generates (CI fails when stale)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentstream.cli.main import app
from agentstream.config import Settings
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.contracts import CONTRACTS
from agentstream.streams.asyncapi import HEADER_DOCS, document, render
from agentstream.streams.topology import pipeline_topics

COMMITTED = Path(__file__).parent.parent / "docs" / "asyncapi.yaml"


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings as shipped: no AGENTSTREAM_* variables, no agentstream.toml."""
    for name in list(os.environ):
        if name.startswith("AGENTSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return Settings()


def test_committed_document_is_current(default_settings: Settings) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(default_settings), (
        "docs/asyncapi.yaml is stale: run `make asyncapi`"
    )


def test_check_option_fails_on_a_stale_document(default_settings: Settings, tmp_path: Path) -> None:
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(render(default_settings).replace("agent.requests", "agent.requestz"))
    result = CliRunner().invoke(app, ["asyncapi", "--output", str(stale), "--check"])
    assert result.exit_code == 1
    assert "stale" in result.output
    assert CliRunner().invoke(app, ["asyncapi", "--output", str(stale)]).exit_code == 0
    result = CliRunner().invoke(app, ["asyncapi", "--output", str(stale), "--check"])
    assert result.exit_code == 0


def test_every_topic_and_contract_is_described(default_settings: Settings) -> None:
    doc = document(default_settings)
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(pipeline_topics(default_settings))
    assert set(CONTRACTS) <= set(doc["components"]["messages"])
    for operation in doc["operations"].values():
        assert operation["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]
    request = doc["components"]["messages"]["AgentRequest"]
    assert request["payload"]["schema"]["name"] == "AgentRequest"
    assert request["bindings"]["kafka"]["schemaIdPayloadEncoding"] == "confluent"


def test_every_header_is_documented() -> None:
    names = {*dl.DLQ_HEADERS, *dl.OMITTED_HEADERS, *dl.RETRY_HEADERS, dl.REPLAYED_FROM}
    assert set(HEADER_DOCS) == names

"""Settings: the documented variables, nested groups, the TOML file, and secret masking."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agentstream.config import Settings
from agentstream.observability.logging import configure_logging, get_logger


def test_variables_nested_groups_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "agentstream.toml"
    toml.write_text('[topics]\nrequests = "from.toml"\npartitions = 3\n[limits]\nmax_turns = 4\n')
    monkeypatch.setenv("AGENTSTREAM_CONFIG_FILE", str(toml))
    monkeypatch.setenv("AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("AGENTSTREAM_REDIS_URL", "redis://:pw@r:6379/0")
    monkeypatch.setenv("AGENTSTREAM_TOPICS__PARTITIONS", "12")  # variables beat the file
    monkeypatch.setenv("AGENTSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("AGENTSTREAM_KAFKA_SASL_PASSWORD", "hunter2")
    s = Settings()
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.redis_url == "redis://:pw@r:6379/0"
    assert s.topics.requests == "from.toml"
    assert s.topics.partitions == 12
    assert s.limits.max_turns == 4
    security = s.effective_security()
    assert security.security_protocol == "SASL_SSL"
    assert security.sasl_password is not None
    assert security.sasl_password.get_secret_value() == "hunter2"
    dumped = json.dumps(s.safe_dump())
    assert "hunter2" not in dumped
    assert ":pw@" not in dumped
    assert "hunter2" not in repr(s)


def test_logs_are_json_in_production_and_carry_no_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTSTREAM_KAFKA_SASL_PASSWORD", "hunter2")
    s = Settings(env="production")
    configure_logging(s)
    try:
        get_logger("t").info("settings loaded", settings=s.safe_dump())
        line = capsys.readouterr().err.strip().splitlines()[-1]
        event = json.loads(line)
        assert event["event"] == "settings loaded"
        assert "hunter2" not in line
    finally:
        logging.getLogger().handlers.clear()

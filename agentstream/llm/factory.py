"""Builds the configured ``LLMClient`` from settings."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.exceptions import ConfigError
from agentstream.llm.base import LLMClient
from agentstream.llm.local import MODEL_NAME, LocalRuleModel

LOCAL_MODEL_NAMES = frozenset({"local", MODEL_NAME})


def build_llm(settings: Settings) -> LLMClient:
    """``llm.model = "local"`` gives the rule-based offline stand-in; nothing else exists yet."""
    llm = settings.llm
    if llm.model.strip().lower() in LOCAL_MODEL_NAMES:
        return LocalRuleModel(
            latency_s=llm.local_latency_s,
            failure_rate=llm.local_failure_rate,
            seed=llm.local_seed,
        )
    raise ConfigError(
        f"unsupported llm.model {llm.model!r}: only 'local' (the deterministic rule-based "
        "stand-in, not a language model) is available in this version"
    )

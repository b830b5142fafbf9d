"""RequestProgress: the per-request accumulator that travels with a request between stages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentstream.llm.base import Usage


def new_progress(started_at: datetime, message_bytes: int) -> dict[str, Any]:
    return {
        "started_at": started_at,
        "message_bytes": message_bytes,
        "turn": 0,
        "llm_calls": 0,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0},
        "tool_calls": [],
        "stage_ms": {},
        "degraded": False,
    }


def add_stage_time(progress: dict[str, Any], stage: str, ms: float) -> None:
    stage_ms: dict[str, float] = progress["stage_ms"]
    stage_ms[stage] = stage_ms.get(stage, 0.0) + ms


def add_usage(progress: dict[str, Any], usage: Usage) -> None:
    u = progress["usage"]
    u["prompt_tokens"] += usage.prompt_tokens
    u["completion_tokens"] += usage.completion_tokens
    u["cost_usd"] += usage.cost_usd
    progress["llm_calls"] += 1

"""The token estimate reserved before an LLM call: the prompt as the generation stage will build
it (system prompt and history within the history budget) plus ``completion_token_estimate``.

Tool specs are not counted; the reservation is corrected to the provider's actual usage after the
call, so the estimate only has to be close, not exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentstream.config import Settings
from agentstream.llm.prompt import build_messages
from agentstream.llm.tokens import estimate_message_tokens


def estimate_call_tokens(settings: Settings, history: Sequence[Mapping[str, Any]]) -> int:
    messages = build_messages(
        settings.llm.system_prompt,
        [dict(e) for e in history],
        settings.limits.history_token_budget,
    )
    prompt = sum(estimate_message_tokens(m) for m in messages)
    return prompt + settings.admission.completion_token_estimate

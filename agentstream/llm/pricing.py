"""Token prices and cost: USD per one million input (prompt) and output (completion) tokens.

Providers answer with dated model ids (``gpt-4o-mini-2024-07-18`` for ``gpt-4o-mini``), so a
lookup tries the exact id first, then the longest configured id that the answered id starts with.
A model without a price costs 0.0 (logged once per model, at warning level).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentstream.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


class PriceTable:
    """Model id → :class:`ModelPrice`."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = dict(prices or {})
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._warned: set[str] = set()

    def price_for(self, *models: str) -> ModelPrice | None:
        """The price of the first of ``models`` that has one (exact id, then id prefix)."""
        for model in models:
            if model in self._prices:
                return self._prices[model]
        for model in models:
            for known in self._by_length:
                if model.startswith(known):
                    return self._prices[known]
        return None

    def cost_usd(self, prompt_tokens: int, completion_tokens: int, *models: str) -> float:
        price = self.price_for(*(m for m in models if m))
        if price is None:
            name = next((m for m in models if m), "")
            if self._prices and name not in self._warned:
                self._warned.add(name)
                log.warning("no price configured for model; cost reported as 0", model=name)
            return 0.0
        return (
            prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok
        ) / 1_000_000

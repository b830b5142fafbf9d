"""A value round-trips through the session's real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentstream.config import Settings
from tests.support.redis import connect

pytestmark = pytest.mark.integration


async def test_value_round_trips(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    assert settings.redis_url is not None
    client = connect(settings.redis_url)
    key = f"{settings.state.key_prefix}:roundtrip"
    value = "héllo wörld".encode()
    try:
        assert await client.ping()
        await client.set(key, value, ex=60)
        assert await client.get(key) == value
        assert 0 < await client.ttl(key) <= 60
        assert await client.delete(key) == 1
        assert await client.get(key) is None
    finally:
        await client.aclose()

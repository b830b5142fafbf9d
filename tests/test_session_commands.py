"""The session store's command cuts (issue 18) on a real Redis (or Redis Cluster): a request's
final write frees the session with a marker instead of an HDEL and keeps a TTL its claim just
set; a step completed by the worker that began it keeps the TTL its begin set. Each cut keeps
what it replaced: the next request claims the session, sessions and journal entries never
outlive nor fall short of their TTLs, and sessions claimed or freed by the previous version's
scripts (a rolling upgrade) work both ways."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.state.context import AgentContext
from agentstream.state.context_scripts import FREE
from agentstream.state.keys import Keys
from agentstream.state.memory import MemorySessionStore
from agentstream.state.redis_session import RedisSessionStore
from agentstream.state.session import Claim, ClaimOutcome, RequestIds, SessionStore

pytestmark = pytest.mark.integration

TTL_S = 600
RETENTION_S = 1000

# The claim script of the version before the free marker (what a not-yet-upgraded worker runs).
_OLD_CLAIM = """
local function recorded(r, id, keep)
  r = r or ''
  if string.find(' ' .. r .. ' ', ' ' .. id .. ' ', 1, true) then return nil end
  if r == '' then r = id else r = r .. ' ' .. id end
  local _, spaces = string.gsub(r, ' ', ' ')
  for _ = 1, spaces + 1 - keep do
    r = string.sub(r, string.find(r, ' ', 1, true) + 1)
  end
  return r
end
local function held_by(a, id)
  return a and string.sub(a, 1, string.len(id) + 1) == id .. '|'
end
local key = KEYS[1]
local h = redis.call('HMGET', key, 'o', 'a', 'r')
if h[1] then
  if h[1] ~= ARGV[4] then return -5 end
elseif ARGV[7] ~= '1' and redis.call('HEXISTS', key, 'data') == 1 then
  return -4
end
local held = held_by(h[2], ARGV[1])
if h[2] and not held then
  local since = tonumber(string.sub(h[2], string.find(h[2], '|', 1, true) + 1))
  if tonumber(ARGV[2]) - since < tonumber(ARGV[3]) then return -2 end
end
if ARGV[5] ~= '' and recorded(h[3], ARGV[5], 1000000) then return -3 end
redis.call('HSET', key, 'a', ARGV[1] .. '|' .. ARGV[2], 'o', ARGV[4])
redis.call('EXPIRE', key, tonumber(ARGV[6]))
if held then return 2 end
return 1
"""


def _ids(request: str, session: str = "s") -> RequestIds:
    return RequestIds(request_id=request, session_id=session, user_id="u", tenant_id="t")


def _store(redis: Any, prefix: str, owner: str = "w1") -> RedisSessionStore:
    return RedisSessionStore(
        redis,
        Keys(prefix),
        context_ttl_s=TTL_S,
        dedupe_ttl_s=60,
        journal_retention_s=RETENTION_S,
        owner=owner,
    )


def _answer(ctx: AgentContext | None) -> AgentContext:
    ctx = ctx or AgentContext(session_id="s", user_id="u", tenant_id="t")
    ctx.history.append({"role": "assistant", "content": "hi"})
    return ctx


async def _finish(store: RedisSessionStore, ids: RequestIds, response: str) -> None:
    """What generation does for a request without tools: begin the step reading the context,
    then one write with the answer, the step's result and the release."""
    state, current = await store.begin_step_reading(ids, f"{ids.request_id}:t0:llm")
    assert state.status == "new"
    await store.update(
        ids,
        _answer,
        current=current,
        complete_step=(f"{ids.request_id}:t0:llm", "result"),
        ends_with=response,
    )


async def test_the_final_write_frees_the_session_for_the_next_request(
    redis: Any, unique_prefix: str
) -> None:
    store = _store(redis, unique_prefix)
    claim = Claim(stale_s=60)
    first = await store.open(_ids("r1"), "requests/0/1", claim)
    assert first.claim is ClaimOutcome.CLAIMED
    busy = await store.open(_ids("r2"), "requests/0/2", claim)
    assert busy.claim is ClaimOutcome.BUSY  # held, not stale
    await _finish(store, _ids("r1"), "resp-1")
    key = store.contexts.key("t", "s")
    assert await redis.hget(key, "a") == FREE.encode()
    ctx = await store.get("t", "s")
    assert ctx is not None
    assert ctx.active_request is None
    # the next request claims it, and must follow a response the session knows
    assert await store.claim(_ids("r2"), Claim(stale_s=60, follows="resp-1")) is (
        ClaimOutcome.CLAIMED
    )
    await _finish(store, _ids("r2"), "resp-2")
    lost = await store.claim(_ids("r3"), Claim(stale_s=60, follows="resp-unknown"))
    assert lost is ClaimOutcome.HISTORY_LOST
    # releasing again (a redelivery) changes nothing; a release of a held session frees it
    await store.release(_ids("r2"), "resp-2")
    assert await store.claim(_ids("r4"), claim) is ClaimOutcome.CLAIMED
    await store.release(_ids("r4"))
    assert await redis.hget(key, "a") == FREE.encode()
    assert await store.claim(_ids("r5"), claim) is ClaimOutcome.CLAIMED


async def test_the_session_keeps_its_ttl_and_an_old_claim_refreshes_it(
    redis: Any, unique_prefix: str
) -> None:
    store = _store(redis, unique_prefix)
    key = store.contexts.key("t", "s")
    assert await store.claim(_ids("r1"), Claim(stale_s=60)) is ClaimOutcome.CLAIMED
    await _finish(store, _ids("r1"), "resp-1")
    assert TTL_S * 0.9 <= await redis.ttl(key) <= TTL_S  # the claim's TTL, not refreshed
    # a request claimed longer than a tenth of the TTL ago: its final write sets the TTL again
    old_since = await store.contexts.claim_script(
        keys=[key], args=["r2", 1, 60_000, "t|u", "", TTL_S, "0"]
    )
    assert old_since == 1
    await redis.expire(key, 5)
    await _finish(store, _ids("r2"), "resp-2")
    assert await redis.ttl(key) > TTL_S * 0.9
    # a write by a request that does not hold the session refreshes it too
    await redis.expire(key, 5)
    await store.update(_ids("r3"), _answer)
    assert await redis.ttl(key) > TTL_S * 0.9
    # the holder's writes before its final one (a turn with tool calls) keep its claim's TTL
    assert await store.claim(_ids("r4"), Claim(stale_s=60)) is ClaimOutcome.CLAIMED
    await redis.expire(key, 500)
    await store.update(_ids("r4"), _answer)
    assert 490 <= await redis.ttl(key) <= 500
    await store.update(_ids("r4"), _answer, ends_with="resp-4")
    assert 490 <= await redis.ttl(key) <= 500
    assert await store.claim(_ids("r5"), Claim(stale_s=60, follows="resp-4")) is (
        ClaimOutcome.CLAIMED
    )


async def test_a_step_completed_by_its_worker_keeps_at_least_the_retention(
    redis: Any, unique_prefix: str
) -> None:
    store = _store(redis, unique_prefix)
    other = _store(redis, unique_prefix, owner="w2")
    journal = store.journal
    key = journal.key("t", "s", "r1:t0:c0")
    assert (await store.begin_step(_ids("r1"), "r1:t0:c0")).status == "new"
    assert await redis.ttl(key) > RETENTION_S  # retention plus the slack
    await store.complete_step(_ids("r1"), "r1:t0:c0", "ok")
    assert await redis.hget(key, "status") == b"done"
    assert RETENTION_S < await redis.ttl(key) <= RETENTION_S * 1.1
    # completed by a worker that did not begin it: the TTL is set again
    assert (await store.begin_step(_ids("r2"), "r2:t0:c0")).status == "new"
    await other.complete_step(_ids("r2"), "r2:t0:c0", "ok")
    assert await redis.ttl(journal.key("t", "s", "r2:t0:c0")) <= RETENTION_S
    # an entry gone between begin and completion (Redis lost it) never stays without a TTL
    for step, complete in (("r3:t0:c0", "step"), ("r4:t0:llm", "update")):
        assert (await store.begin_step(_ids(step[:2]), step)).status == "new"
        await redis.delete(journal.key("t", "s", step))
        if complete == "step":
            await store.complete_step(_ids(step[:2]), step, "ok")
        else:
            await store.update(_ids(step[:2]), _answer, complete_step=(step, "ok"))
        assert 0 < await redis.ttl(journal.key("t", "s", step)) <= RETENTION_S
        assert (await store.begin_step(_ids(step[:2]), step)).status == "done"


async def test_rolling_upgrade_sessions_pass_between_versions(
    redis: Any, unique_prefix: str
) -> None:
    """A session claimed by a worker of the previous version is released by this one, and one
    this version freed (the marker) is claimed by the previous version's script."""
    store = _store(redis, unique_prefix)
    old_claim = redis.register_script(_OLD_CLAIM)
    key = store.contexts.key("t", "s")
    args = store.contexts.claim_args("r1", "t|u", stale_s=60, follows=None, trusted=False)
    assert await old_claim(keys=[key], args=args) == 1  # an old worker claims
    assert await store.claim(_ids("r2"), Claim(stale_s=60)) is ClaimOutcome.BUSY
    await _finish(store, _ids("r1"), "resp-1")  # ... and a new one finishes the request
    assert await redis.hget(key, "a") == FREE.encode()
    args = store.contexts.claim_args("r2", "t|u", stale_s=60, follows=None, trusted=False)
    assert await old_claim(keys=[key], args=args) == 1  # an old worker takes the freed session
    assert await store.claim(_ids("r3"), Claim(stale_s=60)) is ClaimOutcome.BUSY
    await store.release(_ids("r2"), "resp-2")
    # a session an old worker freed has no field a at all
    await redis.hdel(key, "a")
    assert await store.claim(_ids("r3"), Claim(stale_s=60, follows="resp-2")) is (
        ClaimOutcome.CLAIMED
    )


@pytest.fixture(params=["redis", "memory"])
def any_store(request: pytest.FixtureRequest, redis: Any, unique_prefix: str) -> SessionStore:
    if request.param == "memory":
        return MemorySessionStore(owner="w1")
    return _store(redis, unique_prefix)


async def test_open_reading_claims_begins_the_step_and_reads_the_context(
    any_store: SessionStore,
) -> None:
    """One round trip on one server (a script), the same answers as open + begin_step_reading
    everywhere: only a first sighting that holds its session begins its step."""
    store, claim = any_store, Claim(stale_s=60)
    opening, state, ctx = await store.open_reading(_ids("r1"), "q/0/1", claim, "r1:t0:llm")
    assert (opening.first_sighting, opening.claim) == (True, ClaimOutcome.CLAIMED)
    assert state is not None
    assert state.status == "new"
    assert ctx is not None
    assert ctx.history == []
    assert ctx.active_request == "r1"
    assert ctx.owned_by("t", "u")
    # a repeat at another position begins nothing; another request of the session waits
    repeat = await store.open_reading(_ids("r1"), "q/0/2", claim, "r1:t0:llm")
    assert (repeat[0].first_sighting, repeat[0].claim, repeat[1:]) == (
        False,
        ClaimOutcome.HELD,
        (None, None),
    )
    busy = await store.open_reading(_ids("r2"), "q/0/3", claim, "r2:t0:llm")
    assert (busy[0].claim, busy[1:]) == (ClaimOutcome.BUSY, (None, None))
    assert (await store.begin_step(_ids("r2"), "r2:t0:llm")).status == "new"  # never begun
    await store.update(
        _ids("r1"),
        _answer,
        current=ctx,
        complete_step=("r1:t0:llm", "answer"),
        ends_with="resp-1",
    )
    # redelivered after it finished: the step is done, the context has the answer
    again, state, ctx = await store.open_reading(_ids("r1"), "q/0/1", claim, "r1:t0:llm")
    assert (again.first_sighting, again.claim) == (True, ClaimOutcome.CLAIMED)
    assert state is not None
    assert (state.status, state.result) == ("done", "answer")
    assert ctx is not None
    assert ctx.history[-1]["content"] == "hi"
    assert ctx.version == 1
    forbidden = await store.open_reading(
        RequestIds(request_id="r9", session_id="s", user_id="eve", tenant_id="t"),
        "q/0/9",
        claim,
        "r9:t0:llm",
    )
    assert (forbidden[0].claim, forbidden[1:]) == (ClaimOutcome.FORBIDDEN, (None, None))


async def test_open_reading_of_a_context_without_an_owner(redis: Any, unique_prefix: str) -> None:
    """A context written before owners were recorded is checked against its conversation,
    claimed trusted, then its step begun."""
    store = _store(redis, unique_prefix)
    legacy = AgentContext(session_id="s", user_id="u", tenant_id="t")
    key = store.contexts.key("t", "s")
    await redis.hset(key, mapping={"v": 3, "data": legacy.to_json()})
    opening, state, ctx = await store.open_reading(
        _ids("r1"), "q/0/1", Claim(stale_s=60), "r1:t0:llm"
    )
    assert opening.claim is ClaimOutcome.CLAIMED
    assert state is not None
    assert state.status == "new"
    assert ctx is not None
    assert ctx.version == 3
    await redis.hset(store.contexts.key("t", "s2"), mapping={"v": 1, "data": legacy.to_json()})
    refused = await store.open_reading(
        RequestIds(request_id="r2", session_id="s2", user_id="eve", tenant_id="t"),
        "q/0/2",
        Claim(stale_s=60),
        "r2:t0:llm",
    )
    assert (refused[0].claim, refused[1:]) == (ClaimOutcome.FORBIDDEN, (None, None))


async def _lose(store: SessionStore, session: str = "s") -> None:
    """The session's hash is gone, as after Redis restarted empty."""
    if isinstance(store, MemorySessionStore):
        store.expire("t", session)
    else:
        assert isinstance(store, RedisSessionStore)
        await store.contexts.delete("t", session)


async def test_a_session_lost_before_the_release_is_not_revived_by_it(
    any_store: SessionStore,
) -> None:
    """The chaos run's silent history reset: a request that held its session published its
    answer, Redis restarted empty, then the post-publish release ran. Recording the response
    then would let the next request, which follows it, run on an empty history unnoticed; the
    release records nothing and that request is refused CONTEXT_LOST (HISTORY_LOST) instead."""
    store, claim = any_store, Claim(stale_s=60)
    opening, _, ctx = await store.open_reading(_ids("r1"), "q/0/1", claim, "r1:t0:llm")
    assert opening.claim is ClaimOutcome.CLAIMED
    await store.update(_ids("r1"), _answer, current=ctx)  # a conversation, session still held
    await _lose(store)
    await store.release(_ids("r1"), "resp-1")
    lost = await store.claim(_ids("r2"), Claim(stale_s=60, follows="resp-1"))
    assert lost is ClaimOutcome.HISTORY_LOST
    # a request refused before it claimed (no conversation to lose) is recorded all the same:
    # the request that follows its answer starts the session afresh
    await _lose(store)
    await store.release(_ids("r2"), "resp-2", held=False)
    fresh = await store.claim(_ids("r3"), Claim(stale_s=60, follows="resp-2"))
    assert fresh is ClaimOutcome.CLAIMED
    # a held request's release records its response while the session lasts, held or not
    await store.update(_ids("r3"), _answer, current=None)
    await store.release(_ids("r3"), "resp-3")
    assert await store.claim(_ids("r4"), Claim(stale_s=60, follows="resp-3")) is (
        ClaimOutcome.CLAIMED
    )
    await store.release(_ids("r3"), "resp-3b")  # r4 holds it now; the conversation is there
    assert await store.claim(_ids("r4"), Claim(stale_s=60, follows="resp-3b")) is (
        ClaimOutcome.HELD
    )

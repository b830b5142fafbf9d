"""Step journal: exactly-once effects for LLM steps and tool calls.

Every step has a deterministic id (request_id + turn + call index). Before running a step the
worker calls :meth:`StepJournal.begin`:

- ``done``: the step finished before (a redelivery or a replay): use the recorded result, do not
  run it again;
- ``new``: first attempt; the entry is now ``running`` and owned by this worker;
- ``in_flight``: another attempt started and never finished (its worker crashed, or the partition
  moved mid-step). The caller resolves it by the step's policy: read-only steps run again;
  side-effecting steps run again only with the same idempotency key, otherwise the outcome is
  unknown and goes to a dead-letter topic for an operator;
- ``unknown``: dead-lettered as outcome-unknown before; further deliveries are dropped, and only
  an operator's replay (``rerun_unknown``) runs it again.

Entries expire at least ``retention_s`` (default 24 h) after their last change. Retention must
exceed the longest window in which a record can be redelivered or replayed: replaying a dead
letter older than the retention runs its steps again.

A begun entry lives for the retention plus a slack (a tenth of it), so completing it within the
slack keeps at least the retention without a second ``EXPIRE`` (issue 18: one command fewer per
step). Only the worker that began the step knows when it did (:meth:`StepJournal.ttl_right`);
any other completion sets the TTL again.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from agentstream.state.autopipe import AutoPipeline
from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient

# begin(step key, owner, now ms, ttl s, rerun unknown): {status, value}. The owner is the worker
# id and a token unique to this call: the same call sent again after a lost reply finds its own
# claim. Rerun unknown "1": an operator's replay.
BEGIN_FN = """
local function begin(key, owner, now, ttl, rerun)
  local h = redis.call('HMGET', key, 'status', 'owner', 'result')
  local st = h[1]
  if st == 'done' then return {'done', h[3]} end
  if st == 'unknown' and rerun == '0' then return {'unknown', ''} end
  if st == 'running' and h[2] == owner then
    return {'new', ''}  -- this very call again: its first reply was lost with a connection
  end
  redis.call('HSET', key, 'status', 'running', 'owner', owner, 'started', now)
  redis.call('EXPIRE', key, tonumber(ttl))
  if st == 'running' then return {'in_flight', h[2]} end
  return {'new', ''}
end
"""

# KEYS[1] step key, KEYS[2] (optional) a hash (the session context) whose fields v, data, a, o
# are read in the same round trip; ARGV: owner, now ms, ttl s, rerun unknown (see BEGIN_FN)
_BEGIN = (
    BEGIN_FN
    + """
local r = begin(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if KEYS[2] then
  local h = redis.call('HMGET', KEYS[2], 'v', 'data', 'a', 'o')
  r[3] = h[1]; r[4] = h[2]; r[5] = h[3]; r[6] = h[4]
end
return r
"""
)

# KEYS[1] step key; ARGV: result, retention s, "1": the entry's TTL is right (keep it unless
# the entry was gone: 2 new fields)
_COMPLETE = """
local added = redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[1])
if ARGV[3] ~= '1' or added == 2 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
"""

# KEYS[1] step key; ARGV: retention s
_UNKNOWN = """
redis.call('HSET', KEYS[1], 'status', 'unknown')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

StepStatus = Literal["new", "done", "in_flight", "unknown"]

#: A begun entry's TTL is the retention plus 1/_SLACK_SHARE of it.
_SLACK_SHARE = 10
#: How many begun steps a journal remembers the time of (the oldest are forgotten first).
_REMEMBERED = 16384


@dataclass(frozen=True, kw_only=True)
class StepState:
    status: StepStatus
    result: str | None = None
    previous_owner: str | None = None


def llm_step_id(request_id: str, turn: int) -> str:
    return f"{request_id}:t{turn}:llm"


def tool_step_id(request_id: str, turn: int, index: int) -> str:
    return f"{request_id}:t{turn}:c{index}"


class StepJournal:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        retention_s: int,
        owner: str,
        scripts: AutoPipeline | None = None,
    ) -> None:
        """``scripts``: send the script calls through an auto-pipeline (state/autopipe.py)."""
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s
        self._owner = owner
        # a fresh owner token per begin: this journal's random prefix and a counter (a uuid4
        # per begin was a getrandom system call per step, visible in the worker's profile)
        self._tokens = f"{owner}#{uuid.uuid4().hex[:12]}"
        self._counter = itertools.count(1)
        self._slack_s = max(1, retention_s // _SLACK_SHARE)
        self._begun: OrderedDict[str, float] = OrderedDict()  # step key -> monotonic time
        register: Any = (scripts or redis).register_script
        self._begin = register(_BEGIN)
        self._complete = register(_COMPLETE)
        self._unknown = register(_UNKNOWN)

    @property
    def retention_s(self) -> int:
        return self._retention_s

    def key(self, tenant_id: str, session_id: str, step_id: str) -> str:
        return self._keys.step(tenant_id, session_id, step_id)

    def begin_args(self, rerun_unknown: bool = False) -> list[str | int]:
        """The arguments of a step begin (``BEGIN_FN``): a fresh owner token, now, the TTL."""
        now = int(time.time() * 1000)
        owner = f"{self._tokens}.{next(self._counter)}"
        ttl = self._retention_s + self._slack_s
        return [owner, now, ttl, "1" if rerun_unknown else "0"]

    def began(self, key: str, state: StepState, at: float) -> StepState:
        """Remember when this worker (re)set the TTL of ``key`` (for :meth:`ttl_right`)."""
        if state.status in ("new", "in_flight"):
            self._begun[key] = at
            self._begun.move_to_end(key)
            if len(self._begun) > _REMEMBERED:
                self._begun.popitem(last=False)
        return state

    def ttl_right(self, key: str) -> bool:
        """This journal began ``key`` less than the slack ago, so the entry's TTL still covers
        the retention after completion: completing it may skip the ``EXPIRE``. Forgets it."""
        began = self._begun.pop(key, None)
        return began is not None and time.monotonic() - began < self._slack_s

    async def begin_and_read(
        self,
        tenant_id: str,
        session_id: str,
        step_id: str,
        hash_key: str,
        *,
        rerun_unknown: bool = False,
    ) -> tuple[StepState, list[Any]]:
        """:meth:`begin`, and read fields ``v, data, a, o`` of ``hash_key`` (the session
        context) in the same round trip."""
        key = self._keys.step(tenant_id, session_id, step_id)
        at = time.monotonic()
        raw = await self._begin(keys=[key, hash_key], args=self.begin_args(rerun_unknown))
        fields = list(raw[2:6])
        fields += [None] * (4 - len(fields))  # trailing nils are dropped from Lua replies
        return self.began(key, self.parse_begin(raw[:2]), at), fields

    async def begin(
        self, tenant_id: str, session_id: str, step_id: str, *, rerun_unknown: bool = False
    ) -> StepState:
        """Look the step up and, unless it is done (or unknown and not re-run), take it."""
        key = self._keys.step(tenant_id, session_id, step_id)
        at = time.monotonic()
        raw = await self._begin(keys=[key], args=self.begin_args(rerun_unknown))
        return self.began(key, self.parse_begin(raw), at)

    @staticmethod
    def parse_begin(raw: Any) -> StepState:
        status, value = raw
        status = status.decode() if isinstance(status, bytes) else str(status)
        text = value.decode() if isinstance(value, bytes) else (value or None)
        if status == "done":
            return StepState(status="done", result=text)
        if status == "in_flight":
            return StepState(status="in_flight", previous_owner=text)
        if status == "unknown":
            return StepState(status="unknown")
        return StepState(status="new")

    async def mark_unknown(self, tenant_id: str, session_id: str, step_id: str) -> None:
        """The step's outcome cannot be known (dead-lettered): later deliveries of it are
        dropped until an operator replays the record."""
        await self._unknown(
            keys=[self._keys.step(tenant_id, session_id, step_id)], args=[self._retention_s]
        )

    async def complete(self, tenant_id: str, session_id: str, step_id: str, result: str) -> None:
        key = self._keys.step(tenant_id, session_id, step_id)
        keep = "1" if self.ttl_right(key) else "0"
        await self._complete(keys=[key], args=[result, self._retention_s, keep])

    async def status(self, tenant_id: str, session_id: str, step_id: str) -> str | None:
        """The step's journal status (``running``, ``done``, ``unknown``), None when it has no
        entry (never started, or expired after ``journal_retention_s``)."""
        raw = await self._redis.hget(self._keys.step(tenant_id, session_id, step_id), "status")
        return raw.decode() if isinstance(raw, bytes) else raw


#: Every Lua script the journal runs (start-up checks load them).
SCRIPTS: tuple[str, ...] = (_BEGIN, _COMPLETE, _UNKNOWN)

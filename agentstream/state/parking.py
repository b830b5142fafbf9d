"""Durable parking: a stage record that waits for outside events, held in Redis, not in a worker.

A tool batch with calls that need a person's approval is *parked*: its record (topic, key,
value, headers) is stored with the *waits* it needs resolved (one per approval id), the batch's
offset is acknowledged, and no partition, worker slot or in-memory waiter is held. Each wait is
*resolved* once (the first resolution counts; later ones are duplicates); when the last one is
resolved the record is handed back to be published to its topic again (*resuming*), and marked
*resumed* once the broker has it. A crash between those steps hands it back again on the next
delivery of any resolution (at least once; the stages that consume it are idempotent).

A sorted set orders every parked record by its due time: a worker that finds one past due
resolves its open waits as timed out (streams/approval_timer.py). Entries are leased while
handled, so a crashed worker's entry comes back.

Keys (state/keys.py): ``park:{T:S}:PARK`` (hash: state, pending, topic, key, value, headers, due,
waits), ``wait:{T:S}:ID`` (hash: park, decision) and the one sorted set ``parked``. The park and
its waits share the session's hash tag (one script touches them, and the session context, whose
claim is kept fresh until the due time); the sorted set is written by its own commands.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient

# KEYS[1] park, KEYS[2] session context, KEYS[3..] waits
# ARGV: park id, topic, key, value, headers json, due ms, retention s, request id, waits
#       (space-separated), context expiry s
# Returns {state, due}: 'parked' (new), an existing park's state, or 'decided' (every wait was
# resolved before the park was made: nothing stored).
_PARK = """
local h = redis.call('HMGET', KEYS[1], 'state', 'due')
if h[1] then return {h[1], h[2]} end
local pending = 0
for i = 3, #KEYS do
  if redis.call('HEXISTS', KEYS[i], 'decision') == 0 then pending = pending + 1 end
  redis.call('HSET', KEYS[i], 'park', ARGV[1])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[7]))
end
if pending == 0 then return {'decided', ARGV[6]} end
redis.call('HSET', KEYS[1], 'state', 'parked', 'pending', pending, 'topic', ARGV[2],
  'key', ARGV[3], 'value', ARGV[4], 'headers', ARGV[5], 'due', ARGV[6], 'waits', ARGV[9])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
local a = redis.call('HGET', KEYS[2], 'a')
if a and string.sub(a, 1, string.len(ARGV[8]) + 1) == ARGV[8] .. '|' then
  redis.call('HSET', KEYS[2], 'a', ARGV[8] .. '|' .. ARGV[6])
  if redis.call('TTL', KEYS[2]) < tonumber(ARGV[10]) then
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[10]))
  end
end
return {'parked', ARGV[6]}
"""

# KEYS[1] wait, KEYS[2] its park; ARGV: resolution, retention s
# Returns {status, effective resolution[, topic, key, value, headers]}: status 'recorded' or
# 'duplicate'; the record when the park is resuming (this resolution was its last, or an
# earlier last one's hand-back was not confirmed).
_RESOLVE = """
local prior = redis.call('HGET', KEYS[1], 'decision')
local status = 'duplicate'
if not prior then
  status = 'recorded'
  prior = ARGV[1]
  redis.call('HSET', KEYS[1], 'decision', ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local h = redis.call('HMGET', KEYS[2], 'state', 'topic', 'key', 'value', 'headers')
if not h[1] then return {status, prior} end
if status == 'recorded' and h[1] == 'parked' then
  if redis.call('HINCRBY', KEYS[2], 'pending', -1) > 0 then return {status, prior} end
  redis.call('HSET', KEYS[2], 'state', 'resuming')
  h[1] = 'resuming'
end
if h[1] == 'resuming' then return {status, prior, h[2], h[3], h[4], h[5]} end
return {status, prior}
"""

# KEYS[1] park
_RESUMED = """
if redis.call('HGET', KEYS[1], 'state') == 'resuming' then
  redis.call('HSET', KEYS[1], 'state', 'resumed')
  redis.call('HDEL', KEYS[1], 'value', 'headers', 'key')
end
return 1
"""

# KEYS[1] the sorted set; ARGV: now ms, lease ms, limit. Due members, leased (moved later).
_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), m)
end
return due
"""

#: Every script of this module (the start-up check loads them).
SCRIPTS: tuple[str, ...] = (_PARK, _RESOLVE, _RESUMED, _DUE)

ParkStatus = Literal["parked", "resuming", "resumed", "decided"]


@dataclass(frozen=True, kw_only=True)
class ParkedRecord:
    """A record as it was consumed, to publish again."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, kw_only=True)
class Parked:
    status: ParkStatus
    due_ms: int


@dataclass(frozen=True, kw_only=True)
class Resolution:
    first: bool
    """This resolution counts (False: the wait was resolved before)."""
    effective: str
    """The resolution that counts for the wait."""
    resume: ParkedRecord | None
    """The parked record to publish again: every wait of its park is resolved."""


@dataclass(frozen=True, kw_only=True)
class ParkRef:
    """A park in the due-time index."""

    tenant_id: str
    session_id: str
    park_id: str
    user_id: str = ""
    """The session's user (named by the pipeline's own TIMEOUT decisions)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def _decode_headers(raw: Any) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in json.loads(_text(raw))]


class ParkingLot:
    """Parked records in Redis (see the module docstring)."""

    def __init__(
        self, redis: RedisClient, keys: Keys, *, retention_s: int, context_ttl_s: int
    ) -> None:
        """``retention_s``: how long parks and resolutions are kept (the journal's retention:
        a redelivered batch must find its decisions); ``context_ttl_s``: a parked session's
        context is kept at least this long past the due time."""
        self._redis = redis
        self._keys = keys
        self._retention_s = retention_s
        self._context_ttl_s = context_ttl_s
        self._park = redis.register_script(_PARK)
        self._resolve = redis.register_script(_RESOLVE)
        self._resumed = redis.register_script(_RESUMED)
        self._due = redis.register_script(_DUE)

    async def resolutions(
        self, tenant_id: str, session_id: str, wait_ids: Sequence[str]
    ) -> dict[str, str | None]:
        """Each wait's resolution, None while open."""
        found: dict[str, str | None] = {}
        for wait_id in wait_ids:
            raw = await self._redis.hget(
                self._keys.wait(tenant_id, session_id, wait_id), "decision"
            )
            found[wait_id] = None if raw is None else _text(raw)
        return found

    async def park(
        self,
        ref: ParkRef,
        *,
        request_id: str,
        wait_ids: Sequence[str],
        record: ParkedRecord,
        due_ms: int,
        now_ms: int,
    ) -> Parked:
        """Park ``record`` until every wait is resolved (idempotent: a park that exists is
        returned as it is). The due-time index is written first: a crash in between leaves an
        index entry that the sweep drops, never a park that cannot time out."""
        await self._redis.zadd(self._keys.parked(), {_member(ref): due_ms}, nx=True)
        keys = [
            self._keys.park(ref.tenant_id, ref.session_id, ref.park_id),
            self._keys.context(ref.tenant_id, ref.session_id),
            *(self._keys.wait(ref.tenant_id, ref.session_id, w) for w in wait_ids),
        ]
        context_expiry_s = max(0, due_ms - now_ms) // 1000 + self._context_ttl_s
        raw = await self._park(
            keys=keys,
            args=[
                ref.park_id,
                record.topic,
                record.key or b"",
                record.value,
                _encode_headers(record.headers),
                due_ms,
                max(self._retention_s, context_expiry_s),
                request_id,
                " ".join(wait_ids),
                context_expiry_s,
            ],
        )
        status = _text(raw[0])
        assert status in ("parked", "resuming", "resumed", "decided")
        return Parked(status=status, due_ms=int(_text(raw[1] or 0)))  # type: ignore[arg-type]

    async def resolve(self, ref: ParkRef, wait_id: str, resolution: str) -> Resolution:
        """Record ``resolution`` for ``wait_id`` unless it has one (first wins)."""
        keys = [
            self._keys.wait(ref.tenant_id, ref.session_id, wait_id),
            self._keys.park(ref.tenant_id, ref.session_id, ref.park_id),
        ]
        raw = await self._resolve(keys=keys, args=[resolution, self._retention_s])
        resume = None
        if len(raw) > 2:
            resume = ParkedRecord(
                topic=_text(raw[2]),
                key=bytes(raw[3]) or None,
                value=bytes(raw[4]),
                headers=_decode_headers(raw[5]),
            )
        return Resolution(first=_text(raw[0]) == "recorded", effective=_text(raw[1]), resume=resume)

    async def resumed(self, ref: ParkRef) -> None:
        """The resumed record is on its topic: forget the record and its due time."""
        await self._resumed(keys=[self._keys.park(ref.tenant_id, ref.session_id, ref.park_id)])
        await self._redis.zrem(self._keys.parked(), _member(ref))

    async def due(self, now_ms: int, *, lease_ms: int, limit: int = 100) -> list[ParkRef]:
        """Parks past their due time, leased for ``lease_ms`` (handled by one sweep at a time;
        an entry whose sweep crashed comes back when its lease ends)."""
        raw = await self._due(keys=[self._keys.parked()], args=[now_ms, lease_ms, limit])
        refs = []
        for member in raw:
            tenant_id, session_id, park_id, user_id = json.loads(_text(member))
            refs.append(
                ParkRef(
                    tenant_id=tenant_id, session_id=session_id, park_id=park_id, user_id=user_id
                )
            )
        return refs

    async def open_waits(self, ref: ParkRef) -> list[str] | None:
        """The unresolved waits of a parked record; None when it is no longer parked (gone or
        resumed): its index entry is dropped then."""
        key = self._keys.park(ref.tenant_id, ref.session_id, ref.park_id)
        state, waits = await self._redis.hmget(key, ["state", "waits"])
        if state is None or _text(state) == "resumed":
            await self._redis.zrem(self._keys.parked(), _member(ref))
            return None
        ids = _text(waits or b"").split()
        resolved = await self.resolutions(ref.tenant_id, ref.session_id, ids)
        return [w for w, r in resolved.items() if r is None]


def _member(ref: ParkRef) -> str:
    fields = [ref.tenant_id, ref.session_id, ref.park_id, ref.user_id]
    return json.dumps(fields, separators=(",", ":"))

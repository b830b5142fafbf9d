"""The Lua scripts behind the session context hash (state/context.py).

The hash ``{prefix}:ctx:{tenant:session}`` holds ``v`` (version), ``data`` (the conversation,
JSON), ``a`` (the request holding the session: ``request_id|since_ms``), ``o`` (its owner:
``tenant|user``) and ``r`` (the ids of the session's latest responses, space-separated). Ids
never contain ``|`` or spaces (processors/sanitize.py).

A free session has no ``a`` or ``a`` = :data:`FREE` (``|0``: no request, claimed at the epoch):
releasing writes that marker in the write it already makes instead of an extra ``HDEL``. Scripts
of earlier versions read the marker as a claim abandoned long ago, so they take the session too
(a rolling upgrade mixes both).

Commands a script can skip (issue 18): the claim reads ``v`` with the other fields instead of an
``HEXISTS`` (``v`` and ``data`` are always written together); a write by the request holding the
session skips the context's ``EXPIRE`` when that request's claim set it less than a tenth of the
TTL ago (the claim refreshes the TTL, so the session still has at least 90 % of it), and the step's
``EXPIRE`` when the caller knows the entry's TTL is right (state/journal.py) and the entry
existed.
"""

from __future__ import annotations

from agentstream.state.journal import BEGIN_FN

# Lua helpers. ``recorded(r, id, keep)``: field r with response ``id`` added (the latest
# ``keep``), or nil when it is there already. ``held_by(a, id)``: field a names request ``id``.
_HELPERS = """
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
local FREE = '|0'
local function since_of(a)
  return tonumber(string.sub(a, string.find(a, '|', 1, true) + 1))
end
"""

# KEYS[1] context key; KEYS[2] (optional) a step-journal entry completed in the same write
# ARGV: expected version ("0" = must not exist), data, ttl s, owner ("tenant|user"),
#       request id making the write ("" = none), "1": the write ends that request, its
#       response id, responses kept, now ms,
#       [step result, step retention s, "1": the entry's TTL is right (keep it unless the
#       entry was gone)]
# The TTL is set again unless the writing request holds the session and its claim (which set
# the TTL) is less than ttl/10 old. Returns the new version, or -1 on a version conflict.
CAS = (
    _HELPERS
    + """
local h = redis.call('HMGET', KEYS[1], 'v', 'a', 'r', 'o')
local cur = h[1] or '0'
if cur ~= ARGV[1] then return -1 end
local nv = tonumber(cur) + 1
local ttl = tonumber(ARGV[3])
local set = {'v', nv, 'data', ARGV[2]}
if not h[4] then set[#set + 1] = 'o'; set[#set + 1] = ARGV[4] end
local held = ARGV[5] ~= '' and held_by(h[2], ARGV[5])
local refresh = true
if held then
  local age = tonumber(ARGV[9]) - since_of(h[2])
  refresh = age < 0 or age >= ttl * 100
end
if ARGV[6] == '1' then
  if held then set[#set + 1] = 'a'; set[#set + 1] = FREE end
  local r = recorded(h[3], ARGV[7], tonumber(ARGV[8]))
  if r then set[#set + 1] = 'r'; set[#set + 1] = r end
end
redis.call('HSET', KEYS[1], unpack(set))
if refresh then redis.call('EXPIRE', KEYS[1], ttl) end
if KEYS[2] then
  local added = redis.call('HSET', KEYS[2], 'status', 'done', 'result', ARGV[10])
  if ARGV[12] ~= '1' or added == 2 then  -- 2 new fields: the entry was gone, it has no TTL
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[11]))
  end
end
return nv
"""
)

# KEYS[1] context key; ARGV: request_id, response id ("" = none), ttl s, responses kept,
# "1": the request held the session (ARGV[5] missing: "0", a script caller of earlier versions).
# Frees the session (a = FREE) if that request holds it, and records the response among the
# session's latest (a hash holding only that record expires like a context). A request that
# held the session records its response only while the session still holds it or still has a
# conversation: when Redis lost the session meanwhile (restarted empty), recording the
# response would let the next request, which follows it, run on an empty history unnoticed;
# unrecorded, that request is refused CONTEXT_LOST. Idempotent.
RELEASE = (
    _HELPERS
    + """
local h = redis.call('HMGET', KEYS[1], 'a', 'r', 'v')
local set, freed = {}, 0
local held = held_by(h[1], ARGV[1])
if held then set, freed = {'a', FREE}, 1 end
local lost = ARGV[5] == '1' and not held and not h[3]
local r = ARGV[2] ~= '' and not lost and recorded(h[2], ARGV[2], tonumber(ARGV[4]))
if r then set[#set + 1] = 'r'; set[#set + 1] = r end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if r and redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
return freed
"""
)

# KEYS[1] context key
# ARGV: request_id, now ms, stale ms, owner ("tenant|user"), response id the session must know
#       ("" = none), ttl s, trusted ("1": the caller checked the owner of a context that
#       records none)
# Makes the request the session's active one, without reading or writing the conversation.
# Returns CLAIMED (1: the session was free), HELD (2: this request already held it, a
# redelivery), BUSY (-2: another request, active for less than stale ms, holds it), UNKNOWN
# (-3: the session does not know the response the request follows), LEGACY (-4: a context
# without a recorded owner; check it, then call again trusted) or FORBIDDEN (-5: another
# owner's session). Nothing changes unless it returns CLAIMED or HELD.
# claim(key, read data): the claim code and the fields it read (o, a, r, v, and data when asked).
_CLAIM_FN = """
local function claim(key, read_data)
  local h
  if read_data then
    h = redis.call('HMGET', key, 'o', 'a', 'r', 'v', 'data')
  else
    h = redis.call('HMGET', key, 'o', 'a', 'r', 'v')
  end
  if h[1] then
    if h[1] ~= ARGV[4] then return -5, h end
  elseif ARGV[7] ~= '1' and h[4] then  -- a conversation (v and data go together), no owner
    return -4, h
  end
  local held = held_by(h[2], ARGV[1])
  if h[2] and h[2] ~= FREE and not held then
      if tonumber(ARGV[2]) - since_of(h[2]) < tonumber(ARGV[3]) then return -2, h end
  end
  if ARGV[5] ~= '' and recorded(h[3], ARGV[5], 1000000) then return -3, h end
  redis.call('HSET', key, 'a', ARGV[1] .. '|' .. ARGV[2], 'o', ARGV[4])
  redis.call('EXPIRE', key, tonumber(ARGV[6]))
  if held then return 2, h end
  return 1, h
end
"""
CLAIM = _HELPERS + _CLAIM_FN + "return (claim(KEYS[1], false))\n"

# One server only (the keys are in different Redis Cluster slots): the request's dedupe marker
# and the claim in one call. KEYS[1] dedupe key, KEYS[2] context key; ARGV as CLAIM, then
# position, dedupe ttl s. Returns {the position the request was first seen at, claim code}.
OPEN = (
    _HELPERS
    + _CLAIM_FN
    + """
local stored = ARGV[8]
if not redis.call('SET', KEYS[1], ARGV[8], 'NX', 'EX', tonumber(ARGV[9])) then
  stored = redis.call('GET', KEYS[1])
end
return {stored, (claim(KEYS[2], false))}
"""
)

# One server only: OPEN, then (a first sighting that holds its session: CLAIMED or HELD) the
# begin of a journal step and the context, read by the claim's own HMGET. KEYS as OPEN, then
# KEYS[3] the step's journal entry; ARGV as OPEN, then the step begin's owner, now ms, ttl s.
# Returns {first position, claim code[, step status, step value, v, data]}.
OPEN_READING = (
    _HELPERS
    + _CLAIM_FN
    + BEGIN_FN
    + """
local stored = ARGV[8]
if not redis.call('SET', KEYS[1], ARGV[8], 'NX', 'EX', tonumber(ARGV[9])) then
  stored = redis.call('GET', KEYS[1])
end
local first = string.match(stored, '^[^ ]*') == string.match(ARGV[8], '^[^ ]*')
local code, h = claim(KEYS[2], true)
if (code ~= 1 and code ~= 2) or not first then
  return {stored, code}
end
local st = begin(KEYS[3], ARGV[10], ARGV[11], ARGV[12], '0')
return {stored, code, st[1], st[2] or false, h[4] or false, h[5] or false}
"""
)
CLAIMED, HELD, BUSY, UNKNOWN, LEGACY, FORBIDDEN = 1, 2, -2, -3, -4, -5


#: ``a`` of a free session (written by the release; a missing ``a`` is free too).
FREE = "|0"

#: Every Lua script the session store runs (start-up checks load them).
SCRIPTS: tuple[str, ...] = (CAS, RELEASE, CLAIM, OPEN, OPEN_READING)

"""The two Lua scripts behind every admission decision: ACQUIRE and SETTLE.

Each sliding window is a pair of keys: a sorted set (member -> time in ms) and a hash
(member -> cost, plus ``#total``, the window's running sum). Entries older than the window are
trimmed at the start of every call, so a window's total is exact: "at most N in any W seconds",
with no fixed-window boundary that lets 2x through.

ACQUIRE checks every window and every daily budget (the tenant's, and the agent's own within the
tenant) first and writes only if all of them allow, so one call is all-or-nothing across the
user's, the tenant's and the agent's limits. The member is the request id (or request id and
turn for LLM calls): acquiring again with the same member replaces its earlier cost instead of
counting twice, so a redelivered record is not charged twice.

A reservation larger than a window's whole limit is allowed only when the window is empty, so a
big request is never starved; that, and settling to an actual usage above the estimate, is why a
token window may end at "limit plus one request".

SETTLE replaces a reserved cost with the actual one (tokens after the LLM call) and adds the actual
usage to the day's usage hashes (the tenant's, and the agent's when it has a budget), for several
calls of one tenant at once (usage is written behind, in batches: see :mod:`.usage_writer`).

The time is Redis's own clock (``TIME``) so all workers agree, unless the caller passes one (tests).
"""

from __future__ import annotations

_COMMON = """
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop entries at or before cutoff from (z, h), keeping h's '#total' in step.
local function trim(z, h, cutoff)
  while true do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then return end
    local costs = redis.call('HMGET', h, unpack(old))
    local sum = 0
    for _, c in ipairs(costs) do
      if c then sum = sum + tonumber(c) end
    end
    redis.call('HDEL', h, unpack(old))
    redis.call('ZREM', z, unpack(old))
    if sum ~= 0 then redis.call('HINCRBY', h, '#total', -sum) end
    if #old < 500 then return end
  end
end
"""

ACQUIRE = (
    _COMMON
    + """
-- KEYS: (zset, hash) per window, then one day hash per budget
-- ARGV: now_ms|'', member, n_windows, n_budgets,
--       then per budget: add_tokens, token_limit (-1 none), cost_limit_micro (-1 none), ttl_s,
--       then per window: cost, limit, window_ms
-- Returns {status, index, retry_ms, now}: status 0 allowed, 1 window `index` is full,
--         2 budget `index` (daily tokens), 3 budget `index` (daily cost).
local now = now_ms(ARGV[1])
local member = ARGV[2]
local n, nb = tonumber(ARGV[3]), tonumber(ARGV[4])
local wbase = 4 + 4 * nb
local priors, totals = {}, {}
for i = 1, n do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local base = wbase + 3 * (i - 1)
  local cost, limit, window = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
    tonumber(ARGV[base + 3])
  trim(z, h, now - window)
  local got = redis.call('HMGET', h, member, '#total')
  local prior = tonumber(got[1] or '0')
  priors[i], totals[i] = prior, tonumber(got[2] or '0')
  local others = totals[i] - prior
  if others > 0 and others + cost > limit then
    -- Earliest time enough of the oldest entries have left the window.
    local need = others + cost - limit
    local freed, start, retry, found = 0, 0, window, false
    while not found do
      local batch = redis.call('ZRANGE', z, start, start + 99, 'WITHSCORES')
      if #batch == 0 then break end
      for j = 1, #batch, 2 do
        if batch[j] ~= member then
          freed = freed + tonumber(redis.call('HGET', h, batch[j]) or '0')
          if freed >= need or freed >= others then
            retry, found = tonumber(batch[j + 1]) + window - now, true
            break
          end
        end
      end
      start = start + 100
    end
    return {1, i, math.max(retry, 1), now}
  end
end
local reserved = {}
for i = 1, nb do
  local b, base = KEYS[2 * n + i], 4 + 4 * (i - 1)
  local add = tonumber(ARGV[base + 1])
  local token_limit, cost_limit = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local used = redis.call('HMGET', b, 'tokens', 'cost_micro', 'r:' .. member)
  reserved[i] = tonumber(used[3] or '0')
  local tokens = tonumber(used[1] or '0') - reserved[i]
  if token_limit >= 0 and (tokens >= token_limit or tokens + add > token_limit) then
    return {2, i, 0, now}
  end
  if cost_limit >= 0 and tonumber(used[2] or '0') >= cost_limit then
    return {3, i, 0, now}
  end
end
for i = 1, n do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local base = wbase + 3 * (i - 1)
  local cost, window = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 3])
  redis.call('ZADD', z, 'NX', now, member)
  redis.call('HSET', h, member, cost, '#total', totals[i] - priors[i] + cost)
  redis.call('PEXPIRE', z, window)
  redis.call('PEXPIRE', h, window)
end
for i = 1, nb do
  local b, base = KEYS[2 * n + i], 4 + 4 * (i - 1)
  local add = tonumber(ARGV[base + 1])
  if add > 0 then
    redis.call('HINCRBY', b, 'tokens', add - reserved[i])
    redis.call('HSET', b, 'r:' .. member, add)
    redis.call('EXPIRE', b, tonumber(ARGV[base + 4]))
  end
end
return {0, 0, 0, now}
"""
)

SETTLE = (
    _COMMON
    + """
-- Settles several calls (of one tenant: their keys share its hash tag) in one round trip.
-- ARGV: now_ms|'', budget_ttl_s, n_calls, then per call: member, n_windows, n_days,
--       actual_tokens, actual_cost_micro, then per window: actual cost, window_ms
-- KEYS: per call, (zset, hash) per window, then the call's day hashes (the tenant's first,
--       then the agent's when it has a budget)
-- Returns each call's token total of its first day hash after settling.
-- A key shared by several calls of the batch is trimmed and given its TTL once (the TTLs are
-- the same for all of them: `now` does not move within the script).
local now = now_ms(ARGV[1])
local ttl = tonumber(ARGV[2])
local a, k = 4, 1
local totals, seen = {}, {}
for c = 1, tonumber(ARGV[3]) do
  local member, n, nd = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local actual, cost_micro = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  a = a + 5
  for _ = 1, n do
    local z, h = KEYS[k], KEYS[k + 1]
    local cost, window = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    k, a = k + 2, a + 2
    local first = not seen[z]
    if first then trim(z, h, now - window) end
    local prior = redis.call('HGET', h, member)
    if prior then
      redis.call('HSET', h, member, cost)
      redis.call('HINCRBY', h, '#total', cost - tonumber(prior))
    elseif cost > 0 then
      -- reserved while Redis was unreachable, or the reservation already left the window
      redis.call('ZADD', z, now, member)
      redis.call('HSET', h, member, cost)
      redis.call('HINCRBY', h, '#total', cost)
    end
    if first then
      redis.call('PEXPIRE', z, window)
      redis.call('PEXPIRE', h, window)
      seen[z] = true
    end
  end
  for d = 1, nd do
    local b = KEYS[k]
    k = k + 1
    local reserved = redis.call('HGET', b, 'r:' .. member)
    if reserved then redis.call('HDEL', b, 'r:' .. member) end
    local total = redis.call('HINCRBY', b, 'tokens', actual - tonumber(reserved or '0'))
    if d == 1 then totals[c] = total end
    if cost_micro > 0 then redis.call('HINCRBY', b, 'cost_micro', cost_micro) end
    if not seen[b] then
      redis.call('EXPIRE', b, ttl)
      seen[b] = true
    end
  end
  if nd == 0 then totals[c] = 0 end
end
return totals
"""
)


#: Every Lua script admission runs (start-up checks load them).
SCRIPTS: tuple[str, ...] = (ACQUIRE, SETTLE)

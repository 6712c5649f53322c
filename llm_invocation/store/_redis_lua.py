"""The Lua scripts behind the Redis stores: one atomic script per store operation.

Each script reads the time from Redis ``TIME`` (so every process agrees on it), mirrors the
arithmetic of `llm_invocation.store.memory` statement for statement (same doubles, same
order of operations), and touches only the keys it is given plus, for the spend report, one
key it names itself under the same hash tag (see `llm_invocation.store.redis`).

Conventions shared by every script:

- Numbers come in as strings: floats in Python's ``repr`` (exact), integers as decimals, and
  ``""`` for None. Floats go back out formatted ``%.17g`` (exact round trip), because Redis
  truncates a Lua number to an integer when it replies.
- Numbers handed to ``redis.call`` are formatted explicitly as well (Lua's own conversion
  keeps only 14 digits).
- Money is integer nano-dollars; Lua's doubles hold integers exactly up to 2**53
  (about 9 million dollars), which bounds a budget's limit.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACQUIRE",
    "BUDGET_LEVELS",
    "LEAVE",
    "OBSERVE",
    "RATE_LEVELS",
    "RENEW",
    "RESERVE",
    "SETTLE_BUDGET",
    "SETTLE_RATE",
    "SPEND_REPORT",
]

_COMMON: Final = r"""
local function fmt(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function ms(seconds) return string.format('%d', math.ceil(seconds * 1000)) end
local function opt(v)
  if not v or v == '' then return nil end
  return tonumber(v)
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# -- rate limits ------------------------------------------------------------------------------
#
# Per rate key three Redis keys: a hash of the buckets (rc/rl/ru: requests capacity, level,
# updated; tc/tl/tu: the same for tokens; bu: blocked until; lr/lt: learned requests and
# tokens per minute; sq: the tickets' serial), a sorted set of leases scored by their
# expiry, and a hash of the waiters' tickets (lease id -> "since expires tokens serial
# owner", the owner being the store that registered it). A script's KEYS are these triples,
# one per limit; its per-limit ARGV are (requests_per_minute, tokens_per_minute,
# concurrency, the key's name), after the script's own leading arguments. A script that
# frees capacity somebody waits for publishes on the prefix's channel the sender's origin,
# then one line per key: its name, a tab, and the owners of the tickets that should ask
# again (see `next_owners`).

_RATE: Final = (
    _COMMON
    + r"""
local function lesser(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return math.min(a, b)
end

local function load(cache, order, h, z)
  local s = cache[h]
  if s ~= nil then return s end
  local v = redis.call('HMGET', h, 'rc', 'rl', 'ru', 'tc', 'tl', 'tu', 'bu', 'lr', 'lt')
  s = {h = h, z = z, rc = opt(v[1]), rl = opt(v[2]), ru = opt(v[3]), tc = opt(v[4]),
       tl = opt(v[5]), tu = opt(v[6]), bu = opt(v[7]) or -math.huge, lr = opt(v[8]),
       lt = opt(v[9])}
  cache[h] = s
  order[#order + 1] = s
  return s
end

-- _Bucket.refill
local function refill(cap, lvl, upd, capacity, now)
  if capacity ~= cap then
    lvl = math.min(lvl, capacity)
    cap = capacity
  end
  local elapsed = now - upd
  if elapsed > 0 then lvl = math.min(cap, lvl + elapsed * cap / 60.0) end
  return cap, lvl, now
end

-- _Bucket.wait_for
local function wait_for(amount, claimed, cap, lvl)
  if amount > cap then return math.huge end
  local missing = amount + claimed - lvl
  if missing <= 0 then return 0.0 end
  return missing * 60.0 / cap
end

-- _Key.prepare
local function prepare(s, rpm, tpm, now)
  rpm = lesser(rpm, s.lr)
  tpm = lesser(tpm, s.lt)
  if rpm == nil then
    s.rc, s.rl, s.ru = nil, nil, nil
  elseif s.rc == nil then
    s.rc, s.rl, s.ru = rpm, rpm, now
  else
    s.rc, s.rl, s.ru = refill(s.rc, s.rl, s.ru, rpm, now)
  end
  if tpm == nil then
    s.tc, s.tl, s.tu = nil, nil, nil
  elseif s.tc == nil then
    s.tc, s.tl, s.tu = tpm, tpm, now
  else
    s.tc, s.tl, s.tu = refill(s.tc, s.tl, s.tu, tpm, now)
  end
  redis.call('ZREMRANGEBYSCORE', s.z, '-inf', fmt(now))
end

-- Write a key's state back, with an expiry long enough to keep what still matters: the
-- learned limits and buckets for `idle` seconds, a block until it ends, leases until the
-- last one expires.
local function save(s, now, idle)
  local set, del = {}, {}
  local function put(name, value)
    if value == nil then
      del[#del + 1] = name
    else
      set[#set + 1] = name
      set[#set + 1] = fmt(value)
    end
  end
  put('rc', s.rc); put('rl', s.rl); put('ru', s.ru)
  put('tc', s.tc); put('tl', s.tl); put('tu', s.tu)
  if s.bu > -math.huge then put('bu', s.bu) else put('bu', nil) end
  put('lr', s.lr); put('lt', s.lt)
  if #set > 0 then redis.call('HSET', s.h, unpack(set)) end
  if #del > 0 then redis.call('HDEL', s.h, unpack(del)) end
  local keep = idle
  if s.bu - now > keep then keep = s.bu - now end
  redis.call('PEXPIRE', s.h, ms(keep + 1))
  local last = redis.call('ZRANGE', s.z, -1, -1, 'WITHSCORES')
  if #last > 0 then redis.call('PEXPIRE', s.z, ms(tonumber(last[2]) - now + 1)) end
end

-- The live tickets of w, oldest first (by since, then by serial: the order of
-- registration); expired or unreadable ones are dropped on the way.
local function tickets(w, now)
  local flat = redis.call('HGETALL', w)
  local entries, dead = {}, {}
  for j = 1, #flat, 2 do
    local a, b, c, d, o = string.match(flat[j + 1], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    local e = {id = flat[j], since = tonumber(a), expires = tonumber(b), tokens = tonumber(c),
               serial = tonumber(d), owner = o}
    if e.since == nil or e.expires == nil or e.serial == nil or e.expires <= now then
      dead[#dead + 1] = e.id
    else
      entries[#entries + 1] = e
    end
  end
  if #dead > 0 then redis.call('HDEL', w, unpack(dead)) end
  table.sort(entries, function(x, y)
    if x.since ~= y.since then return x.since < y.since end
    return x.serial < y.serial
  end)
  return entries
end

-- _Key.claims: the tickets older than lease, waiting since `since`, and their tokens (a
-- request not registered here is younger than every ticket of its since); and lease's own
-- serial (nil when not registered).
local function claims(entries, lease, since)
  local mine = math.huge
  for _, e in ipairs(entries) do
    if e.id == lease then mine = e.serial end
  end
  local count, tokens = 0, 0
  for _, e in ipairs(entries) do
    if e.id ~= lease and (e.since < since or (e.since == since and e.serial < mine)) then
      count = count + 1
      tokens = tokens + (e.tokens or 0)
    end
  end
  if mine == math.huge then mine = nil end
  return count, tokens, mine
end

-- Who should ask again after capacity was freed on a key: the owners of its oldest
-- tickets, one per free concurrency slot (at least one); everyone for a bucket.
local function next_owners(entries, conc, z)
  local n = #entries
  if conc ~= nil then n = math.max(1, conc - redis.call('ZCARD', z)) end
  local owners, seen = {}, {}
  for i = 1, math.min(n, #entries) do
    local owner = entries[i].owner
    if not seen[owner] then
      seen[owner] = true
      owners[#owners + 1] = owner
    end
  end
  return table.concat(owners, ' ')
end

-- Publish "<key>\t<owner> <owner>..." lines, one per key, after the sender's origin.
local function announce(channel, origin, lines)
  if #lines > 0 then
    redis.call('PUBLISH', channel, origin .. '\n' .. table.concat(lines, '\n'))
  end
end
"""
)

ACQUIRE: Final = (
    _RATE
    + r"""
-- ARGV: lease, tokens, ttl, idle, queue ('1' or ''), since ('' for now), ticket ttl,
--       channel, origin, then (rpm, tpm, concurrency, name) per limit
local now = clock()
local lease, tokens, ttl, idle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local queue = ARGV[5] == '1'
local since = opt(ARGV[6]) or now
if since > now then since = now end
local n = #KEYS / 3
local cache, order, plan = {}, {}, {}
local granted, worst_wait, worst_i, worst_reason = true, 0.0, 0, ''
for i = 1, n do
  local base = 9 + (i - 1) * 4
  local conc = opt(ARGV[base + 3])
  local s = load(cache, order, KEYS[3 * i - 2], KEYS[3 * i - 1])
  local w = KEYS[3 * i]
  prepare(s, opt(ARGV[base + 1]), opt(ARGV[base + 2]), now)
  local entries = tickets(w, now)
  local older, older_tokens, serial = claims(entries, lease, since)
  local wait, reason = 0.0, nil
  if s.bu > now then wait, reason = s.bu - now, 'blocked' end
  if s.rc ~= nil then
    local needed = wait_for(1, older, s.rc, s.rl)
    if needed > wait then wait, reason = needed, 'requests' end
  end
  if s.tc ~= nil and tokens > 0 then
    local needed = wait_for(tokens, older_tokens, s.tc, s.tl)
    if needed > wait then wait, reason = needed, 'tokens' end
  end
  if conc ~= nil and reason == nil then
    if redis.call('ZCARD', s.z) + older >= conc then reason = 'concurrency' end
  end
  plan[i] = {s = s, conc = conc, w = w, misfit = reason ~= nil, serial = serial,
             entries = entries, name = ARGV[base + 4]}
  if reason ~= nil and (granted or wait > worst_wait) then
    granted, worst_wait, worst_i, worst_reason = false, wait, i, reason
  end
end
if granted then
  for i = 1, n do
    local p = plan[i]
    if p.s.rc ~= nil then p.s.rl = p.s.rl - 1 end
    if p.s.tc ~= nil then p.s.tl = p.s.tl - tokens end
    if p.conc ~= nil then redis.call('ZADD', p.s.z, fmt(now + ttl), lease) end
    if p.serial ~= nil then redis.call('HDEL', p.w, lease) end
  end
elseif queue and worst_wait < math.huge then
  local ticket_ttl = tonumber(ARGV[7])
  local entry = fmt(since) .. ' ' .. fmt(now + ticket_ttl) .. ' ' .. int(tokens) .. ' '
  local freed = {}
  for i = 1, n do
    local p = plan[i]
    if p.misfit then
      local serial = p.serial
      if serial == nil then serial = redis.call('HINCRBY', p.s.h, 'sq', 1) end
      redis.call('HSET', p.w, lease, entry .. int(serial) .. ' ' .. ARGV[9])
      if redis.call('PTTL', p.w) < ticket_ttl * 1000 + 1 then
        redis.call('PEXPIRE', p.w, ms(ticket_ttl + 1))
      end
    elseif p.serial ~= nil then
      -- It fits here now but waits elsewhere: its claim here is given up, the next wake.
      redis.call('HDEL', p.w, lease)
      local rest = {}
      for _, e in ipairs(p.entries) do
        if e.id ~= lease then rest[#rest + 1] = e end
      end
      if #rest > 0 then freed[#freed + 1] = p.name .. '\t' .. next_owners(rest, p.conc, p.s.z) end
    end
  end
  announce(ARGV[8], ARGV[9], freed)
end
for _, s in ipairs(order) do save(s, now, idle) end
if granted then return {1, fmt(now)} end
return {0, fmt(worst_wait), worst_i, worst_reason, fmt(now)}
"""
)

SETTLE_RATE: Final = (
    _RATE
    + r"""
-- ARGV: lease, reserved, used, idle, channel, origin, then (rpm, tpm, concurrency, name)
--       per limit
local now = clock()
local lease, reserved, used, idle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local cache, order, freed = {}, {}, {}
for i = 1, #KEYS / 3 do
  local base = 6 + (i - 1) * 4
  local s = load(cache, order, KEYS[3 * i - 2], KEYS[3 * i - 1])
  prepare(s, opt(ARGV[base + 1]), opt(ARGV[base + 2]), now)
  local released = redis.call('ZREM', s.z, lease) == 1
  local refunded = false
  if s.tc ~= nil and reserved ~= used then
    s.tl = math.min(s.tc, s.tl + (reserved - used))
    refunded = reserved > used
  end
  if released or refunded then
    local entries = tickets(KEYS[3 * i], now)
    if #entries > 0 then
      local conc = opt(ARGV[base + 3])
      if not released then conc = nil end
      freed[#freed + 1] = ARGV[base + 4] .. '\t' .. next_owners(entries, conc, s.z)
    end
  end
end
for _, s in ipairs(order) do save(s, now, idle) end
announce(ARGV[5], ARGV[6], freed)
return 1
"""
)

LEAVE: Final = (
    _RATE
    + r"""
-- KEYS: the rate key's triple per limit; ARGV: lease, channel, origin, then
--       (concurrency, name) per limit
local now = clock()
local lease = ARGV[1]
local freed = {}
for i = 1, #KEYS / 3 do
  local w = KEYS[3 * i]
  if redis.call('HDEL', w, lease) == 1 then
    local entries = tickets(w, now)
    if #entries > 0 then
      local conc = opt(ARGV[2 + 2 * i])
      freed[#freed + 1] = ARGV[3 + 2 * i] .. '\t' .. next_owners(entries, conc, KEYS[3 * i - 1])
    end
  end
end
announce(ARGV[2], ARGV[3], freed)
return 1
"""
)

RENEW: Final = (
    _COMMON
    + r"""
-- KEYS: the lease sets; ARGV: lease, ttl
local now = clock()
local lease, ttl = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], lease) then
    redis.call('ZADD', KEYS[i], 'XX', fmt(now + ttl), lease)
    local last = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
    redis.call('PEXPIRE', KEYS[i], ms(tonumber(last[2]) - now + 1))
  end
end
return 1
"""
)

OBSERVE: Final = (
    _RATE
    + r"""
-- ARGV: rpm, tpm, idle, requests_limit, requests_remaining, tokens_limit, tokens_remaining,
--       block (seconds, from a reset with nothing remaining), retry_after
local now = clock()
local s = load({}, {}, KEYS[1], KEYS[2])
local requests_limit, tokens_limit = opt(ARGV[4]), opt(ARGV[6])
local requests_remaining, tokens_remaining = opt(ARGV[5]), opt(ARGV[7])
local block, retry_after = opt(ARGV[8]), opt(ARGV[9])
if requests_limit ~= nil then s.lr = requests_limit end
if tokens_limit ~= nil then s.lt = tokens_limit end
prepare(s, opt(ARGV[1]), opt(ARGV[2]), now)
if requests_remaining ~= nil and s.rc ~= nil then s.rl = math.min(s.rl, requests_remaining) end
if tokens_remaining ~= nil and s.tc ~= nil then s.tl = math.min(s.tl, tokens_remaining) end
if block ~= nil then s.bu = math.max(s.bu, now + block) end
if retry_after ~= nil then s.bu = math.max(s.bu, now + retry_after) end
save(s, now, tonumber(ARGV[3]))
return 1
"""
)

RATE_LEVELS: Final = (
    _RATE
    + r"""
-- KEYS: the rate key's triple; ARGV: rpm, tpm, idle
local now = clock()
local s = load({}, {}, KEYS[1], KEYS[2])
prepare(s, opt(ARGV[1]), opt(ARGV[2]), now)
save(s, now, tonumber(ARGV[3]))
local requests, tokens = 'inf', 'inf'
if s.rc ~= nil then requests = fmt(s.rl) end
if s.tc ~= nil then tokens = fmt(s.tl) end
local waiting = #tickets(KEYS[3], now)
return {requests, tokens, redis.call('ZCARD', s.z), fmt(math.max(0.0, s.bu - now)), waiting}
"""
)

# -- budgets ----------------------------------------------------------------------------------
#
# Per budget state (scope, calendar, period) three Redis keys: the spend hash (a field per
# time bucket index for rolling windows, a field per period id for calendar periods; integer
# nano-dollars), the sorted set of reservations scored by expiry, and the hash of their
# amounts ("r:<id>" -> nano-dollars, "total" -> their sum, so pruning subtracts exactly).
# A script's KEYS are these triples; its per-budget ARGV are (calendar, period, bucket
# width, limit in nano-dollars, seconds to keep the spend hash).

_BUDGET: Final = (
    _COMMON
    + r"""
-- Days since 1970-01-01 -> (year, month, day) of the proleptic Gregorian calendar.
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp
  if m > 2 then mp = m - 3 else mp = m + 9 end
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- _base.period_id for the UTC calendars
local function calendar_id(kind, now)
  local days = math.floor(now / 86400)
  if kind == 'day' then
    local y, m, d = civil(days)
    return string.format('%04d-%02d-%02d', y, m, d)
  end
  if kind == 'month' then
    local y, m = civil(days)
    return string.format('%04d-%02d', y, m)
  end
  local thursday = days - (days + 3) % 7 + 3
  local y = civil(thursday)
  local week = math.floor((thursday - days_from_civil(y, 1, 1)) / 7) + 1
  return string.format('%d-W%02d', y, week)
end

local function reserved_total(a)
  return tonumber(redis.call('HGET', a, 'total') or 0)
end

local function write_total(a, total)
  if total > 0 then
    redis.call('HSET', a, 'total', int(total))
  else
    redis.call('HDEL', a, 'total')
  end
end

-- Drop expired reservations, subtracting their amounts from the total.
local function prune(z, a, now)
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now))
  if #expired == 0 then return end
  local total = reserved_total(a)
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', a, 'r:' .. id)
    if amount then
      total = total - tonumber(amount)
      redis.call('HDEL', a, 'r:' .. id)
    end
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', fmt(now))
  write_total(a, total)
end

local function drop(z, a, id)
  local amount = redis.call('HGET', a, 'r:' .. id)
  if amount then
    redis.call('HDEL', a, 'r:' .. id)
    write_total(a, reserved_total(a) - tonumber(amount))
  end
  redis.call('ZREM', z, id)
end

-- _Window.spent
local function spent(w, kind, period, width, now)
  if kind ~= 'rolling' then
    return tonumber(redis.call('HGET', w, calendar_id(kind, now)) or 0)
  end
  local oldest = math.floor((now - period) / width)
  local flat = redis.call('HGETALL', w)
  local total, stale = 0, {}
  for j = 1, #flat, 2 do
    if tonumber(flat[j]) <= oldest then
      stale[#stale + 1] = flat[j]
    else
      total = total + tonumber(flat[j + 1])
    end
  end
  if #stale > 0 then redis.call('HDEL', w, unpack(stale)) end
  return total
end

-- _Window.add
local function add(w, kind, width, now, nanos, keep)
  if kind == 'rolling' then
    redis.call('HINCRBY', w, int(math.floor(now / width)), nanos)
  else
    local current = calendar_id(kind, now)
    local fields = redis.call('HKEYS', w)
    for _, field in ipairs(fields) do
      if field ~= current then redis.call('HDEL', w, field) end
    end
    redis.call('HINCRBY', w, current, nanos)
  end
  redis.call('PEXPIRE', w, ms(keep))
end

local function budget(i)
  local b = (i - 1) * 5
  return KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[HEAD + b + 1],
    tonumber(ARGV[HEAD + b + 2]), tonumber(ARGV[HEAD + b + 3]), tonumber(ARGV[HEAD + b + 4]),
    tonumber(ARGV[HEAD + b + 5])
end
"""
)

RESERVE: Final = (
    "local HEAD = 3\n"
    + _BUDGET
    + r"""
-- ARGV: reservation, nanos, ttl, then the budgets' arguments
local now = clock()
local id, nanos, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 3
for i = 1, n do
  local _, z, a = budget(i)
  prune(z, a, now)
end
for i = 1, n do
  local w, _, a, kind, period, width, limit = budget(i)
  local used = spent(w, kind, period, width, now)
  local reserved = reserved_total(a)
  if used + reserved + nanos > limit then
    return {0, i, int(used), int(reserved)}
  end
end
for i = 1, n do
  local _, z, a = budget(i)
  drop(z, a, id)
  redis.call('HSET', a, 'r:' .. id, ARGV[2])
  write_total(a, reserved_total(a) + nanos)
  redis.call('ZADD', z, fmt(now + ttl), id)
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local keep = ms(tonumber(last[2]) - now + 1)
  redis.call('PEXPIRE', z, keep)
  redis.call('PEXPIRE', a, keep)
end
return {1}
"""
)

SETTLE_BUDGET: Final = (
    "local HEAD = 4\n"
    + _BUDGET
    + r"""
-- ARGV: reservation, nanos, spend key prefix, seconds to keep the spend report, then the
-- budgets' arguments, then the distinct scopes to count in the spend report
local now = clock()
local id, nanos = ARGV[1], tonumber(ARGV[2])
local n = #KEYS / 3
for i = 1, n do
  local _, z, a = budget(i)
  drop(z, a, id)
end
local out = {fmt(now)}
for i = 1, n do
  local w, _, _, kind, period, width, _, keep = budget(i)
  if nanos ~= 0 then add(w, kind, width, now, ARGV[2], keep) end
  out[#out + 1] = int(spent(w, kind, period, width, now))
end
if nanos ~= 0 then
  local report = ARGV[3] .. calendar_id('day', now)
  for j = HEAD + 5 * n + 1, #ARGV do
    redis.call('HINCRBY', report, ARGV[j], ARGV[2])
  end
  redis.call('PEXPIRE', report, ms(tonumber(ARGV[4])))
end
return out
"""
)

BUDGET_LEVELS: Final = (
    "local HEAD = 0\n"
    + _BUDGET
    + r"""
-- ARGV: the budgets' arguments
local now = clock()
local out = {fmt(now)}
for i = 1, #KEYS / 3 do
  local w, _, _, kind, period, width = budget(i)
  out[#out + 1] = int(spent(w, kind, period, width, now))
end
return out
"""
)

SPEND_REPORT: Final = (
    "local HEAD = 0\n"
    + _BUDGET
    + r"""
-- KEYS[1]: the spend key prefix (it routes the script to the prefix's hash slot);
-- ARGV[1]: the day, or "" for today (UTC, from Redis TIME)
local day = ARGV[1]
if day == '' then day = calendar_id('day', clock()) end
return {day, redis.call('HGETALL', KEYS[1] .. day)}
"""
)

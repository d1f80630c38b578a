-- distbreaker: definitions shared by every script, inserted where a script says
-- `--!include _lib.lua`. Plain Lua 5.1 in the subset that Redis and fakeredis both run.
--
-- Common KEYS:  [1] state HASH   [2] failures ZSET   [3] probes ZSET   [4] history STREAM
--               [5] calls HASH (bucketed counters)   [6] reporters ZSET
--               (control.lua adds [7] control HASH; every key shares the breaker's hash tag)
-- Common ARGV:  [1] now_ms ('' = use the server's TIME)   [2] breaker name
--               [3] events channel   [4] settings, comma-separated integers:
--                   failure_threshold, window_ms, reset_ms, half_open_max_calls,
--                   success_threshold, probe_timeout_ms, failure_rate_ppm (0 = count rule),
--                   minimum_calls, min_reporters, reset_multiplier_milli, max_reset_ms,
--                   reset_jitter_ppm, bucket_ms, enforce (0|1)
--               [5] config JSON (stored for redis-cli readers)   [6] config fingerprint
--               [7] reporter id   [8...] script-specific
--
-- Nothing read from the hash is trusted: load_state() checks every field (a deadline
-- beyond any legitimate one is unreadable too), and repair() rewrites a hash that cannot
-- be read (one `repaired` event); status.lua shows times clamped to now.
local K_STATE, K_FAILURES, K_PROBES = KEYS[1], KEYS[2], KEYS[3]
local K_HISTORY, K_CALLS, K_REPORTERS = KEYS[4], KEYS[5], KEYS[6]
local NAME, CHANNEL = ARGV[2], ARGV[3]
local CONFIG_JSON, CONFIG_FP, REPORTER = ARGV[5], ARGV[6], ARGV[7]

local SETTINGS = {}
for field in string.gmatch(ARGV[4], '[^,]+') do SETTINGS[#SETTINGS + 1] = tonumber(field) end
local THRESHOLD, WINDOW, RESET = SETTINGS[1], SETTINGS[2], SETTINGS[3]
local HALF_OPEN_MAX, SUCCESS_THRESHOLD, PROBE_TIMEOUT = SETTINGS[4], SETTINGS[5], SETTINGS[6]
local RATE_PPM, MINIMUM_CALLS, MIN_REPORTERS = SETTINGS[7], SETTINGS[8], SETTINGS[9]
local MULTIPLIER_MILLI, MAX_RESET, JITTER_PPM = SETTINGS[10], SETTINGS[11], SETTINGS[12]
local BUCKET, ENFORCE = SETTINGS[13], SETTINGS[14]

-- Failures beyond this many are dropped oldest-first: only "threshold reached?" matters,
-- and a forced_closed breaker would otherwise grow its window without bound. (The rate
-- rule counts failures in the calls buckets, which this cap does not touch.)
local FAILURES_CAP = math.max(THRESHOLD, 1000)
-- Manual overrides outlive ordinary idle expiry: an operator's decision should not
-- vanish after a few quiet minutes. History outlives the state it describes, so "how often
-- lately?" has an answer after a quiet hour.
local FORCED_TTL = 30 * 86400 * 1000
local HISTORY_TTL = 86400 * 1000
local HISTORY_LENGTH = 1000
-- No legitimate deadline lies further ahead: operator holds are capped at 7 days and
-- reset durations at max_reset_timeout (<= 7 days) plus half of it as jitter.
local MAX_AHEAD = 11 * 86400 * 1000
local MAX_INT = 9007199254740991
local STATES = { closed = true, open = true, half_open = true, forced_open = true,
  forced_closed = true }

-- Server time keeps hosts with skewed clocks in agreement; tests pass now_ms instead.
local NOW
if ARGV[1] ~= '' then
  NOW = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A stored integer, or nil (and its name noted in `bad`) when it is not one.
local function stored_int(value, name, bad)
  if not value then return 0 end
  local n = tonumber(value)
  if n == nil or n ~= n or n < 0 or n > MAX_INT or math.floor(n) ~= n then
    bad[#bad + 1] = name
    return nil
  end
  return n
end

local function clamp(value, low, high)
  if value < low then return low end
  if value > high then return high end
  return value
end

-- TYPE's status reply: a table { ok = 'hash' } in Redis, a plain string in some emulators.
local function key_type(key)
  local kind = redis.call('TYPE', key)
  if type(kind) == 'table' then return kind.ok end
  return kind
end

-- What each of the other keys must hold. A value of any other type under one of these names
-- (written by hand, by another program) is foreign: repair() drops it, since every command
-- on it would fail with WRONGTYPE and keep the breaker out of shared mode for good.
local KEY_TYPES = {
  { K_FAILURES, 'zset', 'failures key' }, { K_PROBES, 'zset', 'probes key' },
  { K_HISTORY, 'stream', 'history key' }, { K_CALLS, 'hash', 'calls key' },
  { K_REPORTERS, 'zset', 'reporters key' },
}
local COUNTERS = { 'failures_total', 'opens_total', 'would_refuse_total', 'last_failure_at',
  'last_transition_at' }

local function load_state()
  local bad, foreign = {}, {}
  local v = {}
  local kind = key_type(K_STATE)
  if kind == 'hash' then
    v = redis.call('HMGET', K_STATE, 'state', 'generation', 'opened_at', 'open_until',
      'probe_successes', 'open_streak', unpack(COUNTERS))
  elseif kind ~= 'none' then
    bad[#bad + 1] = 'state key'
    foreign[#foreign + 1] = K_STATE
  end
  local s = {
    state = v[1] or 'closed',
    generation = stored_int(v[2], 'generation', bad),
    opened_at = stored_int(v[3], 'opened_at', bad),
    open_until = stored_int(v[4], 'open_until', bad),
    probe_successes = stored_int(v[5], 'probe_successes', bad),
    streak = stored_int(v[6], 'open_streak', bad),
    counters = {},
  }
  for i, name in ipairs(COUNTERS) do s.counters[name] = stored_int(v[6 + i], name, bad) end
  if not STATES[s.state] then bad[#bad + 1] = 'state' end
  if s.open_until and s.open_until > NOW + MAX_AHEAD then bad[#bad + 1] = 'open_until' end
  for _, entry in ipairs(KEY_TYPES) do
    if entry[1] then
      local found = key_type(entry[1])
      if found ~= 'none' and found ~= entry[2] then
        bad[#bad + 1] = entry[3]
        foreign[#foreign + 1] = entry[1]
      end
    end
  end
  s.bad = bad
  s.foreign = foreign
  return s
end

-- Drop foreign values (see KEY_TYPES) and rewrite unreadable counters, so that every
-- command after this one works on what it expects.
local function clean(s)
  for _, key in ipairs(s.foreign) do redis.call('DEL', key) end
  s.foreign = {}
  local fields = {}
  for _, name in ipairs(COUNTERS) do
    if s.counters[name] == nil then
      s.counters[name] = 0
      fields[#fields + 1] = name
      fields[#fields + 1] = 0
    end
  end
  if #fields > 0 then redis.call('HSET', K_STATE, unpack(fields)) end
end

-- HINCRBY on the calls hash, where a field holding something else than an integer is
-- replaced instead of failing the script.
local function bump(field, by)
  local added = redis.pcall('HINCRBY', K_CALLS, field, by)
  if type(added) == 'table' and added.err then redis.call('HSET', K_CALLS, field, by) end
end

-- Idle breakers vanish: a few windows / reset periods after the last write.
local function touch(s)
  local ttl = 3 * math.max(WINDOW, RESET, PROBE_TIMEOUT)
  if s.state == 'forced_open' or s.state == 'forced_closed' then ttl = FORCED_TTL end
  if s.open_until > NOW then ttl = ttl + (s.open_until - NOW) end
  redis.call('PEXPIRE', K_STATE, ttl)
  redis.call('PEXPIRE', K_FAILURES, ttl)
  redis.call('PEXPIRE', K_PROBES, ttl)
  if K_CALLS then redis.call('PEXPIRE', K_CALLS, ttl) end
  if K_REPORTERS then redis.call('PEXPIRE', K_REPORTERS, ttl) end
end

-- The calls buckets inside the window: calls, failures and retries. Fields: c:<bucket>,
-- f:<bucket>, r:<bucket> (bucket = start ms), s:<worker> (the last report applied).
-- Buckets that left the window are deleted on the way (unless read_only).
local function window_counts(read_only)
  local calls, failures, retries = 0, 0, 0
  if not K_CALLS then return calls, failures, retries end
  local floor = NOW - WINDOW
  local flat = redis.call('HGETALL', K_CALLS)
  local stale = {}
  for i = 1, #flat, 2 do
    local kind, start = string.match(flat[i], '^([cfr]):(%d+)$')
    if kind then
      local n = tonumber(flat[i + 1])
      if n == nil or n ~= n or n < 0 or n > MAX_INT or math.floor(n) ~= n then
        stale[#stale + 1] = flat[i]  -- not a count: dropped (read as none)
      elseif tonumber(start) + BUCKET <= floor then
        stale[#stale + 1] = flat[i]
      elseif kind == 'c' then calls = calls + n
      elseif kind == 'f' then failures = failures + n
      else retries = retries + n end
    end
  end
  if #stale > 0 and not read_only then redis.call('HDEL', K_CALLS, unpack(stale)) end
  return calls, failures, retries
end

-- An empty window (close, reset): failures, reporters and counted calls go; the workers'
-- batch sequence numbers stay, so a replayed batch still adds nothing.
local function clear_window()
  redis.call('DEL', K_FAILURES, K_PROBES)
  if K_REPORTERS then redis.call('DEL', K_REPORTERS) end
  if not K_CALLS then return end
  local flat = redis.call('HKEYS', K_CALLS)
  local counts = {}
  for _, field in ipairs(flat) do
    if string.match(field, '^[cfr]:') then counts[#counts + 1] = field end
  end
  if #counts > 0 then redis.call('HDEL', K_CALLS, unpack(counts)) end
end

local function bucket_of(at)
  return at - (at % BUCKET)
end

-- Reporters open on their own right now (`l:<reporter>` = until in the calls hash),
-- sorted, comma-separated.
local function locally_open()
  if not K_CALLS or key_type(K_CALLS) ~= 'hash' then return '' end
  local flat = redis.call('HGETALL', K_CALLS)
  local open = {}
  for i = 1, #flat, 2 do
    local reporter = string.match(flat[i], '^l:(.+)$')
    if reporter and (tonumber(flat[i + 1]) or 0) > NOW then open[#open + 1] = reporter end
  end
  table.sort(open)
  return table.concat(open, ',')
end

-- Distinct reporters with a failure inside the window.
local function reporters_in_window()
  if not K_REPORTERS then return 0 end
  return redis.call('ZCOUNT', K_REPORTERS, '(' .. (NOW - WINDOW), '+inf')
end

-- Failures inside the window: score > NOW - WINDOW.
local function failures_in_window()
  return redis.call('ZCOUNT', K_FAILURES, '(' .. (NOW - WINDOW), '+inf')
end

-- The evidence for the rule in use, as history entries and status show it.
local function evidence()
  local e = { failures = failures_in_window(), reporters = reporters_in_window() }
  if RATE_PPM > 0 then
    local calls, failures = window_counts(true)
    e.calls, e.rate_failures = calls, failures
  end
  return e
end

-- One entry in the capped history stream. A missing or foreign key there never stops the
-- breaker: the error is ignored.
local function remember(s, kind, from, reason, actor, note)
  if not K_HISTORY then return end
  local e = evidence()
  local fields = { 'at', NOW, 'event', kind, 'from', from, 'to', s.state,
    'generation', s.generation, 'reason', reason, 'open_until', s.open_until,
    'failures', e.failures, 'reporters', e.reporters }
  if e.calls then
    fields[#fields + 1] = 'calls'
    fields[#fields + 1] = e.calls
    fields[#fields + 1] = 'rate_failures'
    fields[#fields + 1] = e.rate_failures
  end
  if actor and actor ~= '' then
    fields[#fields + 1] = 'actor'
    fields[#fields + 1] = actor
  end
  if note and note ~= '' then
    fields[#fields + 1] = 'note'
    fields[#fields + 1] = note
  end
  local added = redis.pcall('XADD', K_HISTORY, 'MAXLEN', '~', HISTORY_LENGTH, '*', unpack(fields))
  if type(added) == 'table' and added.err then return end
  redis.pcall('PEXPIRE', K_HISTORY, HISTORY_TTL)
end

-- Every transition: a new generation (fencing late outcomes), one hash write, one event,
-- one history entry.
local function transition(s, to, reason, actor, note)
  local from = s.state
  s.state = to
  s.generation = s.generation + 1
  redis.call('HSET', K_STATE, 'state', to, 'generation', s.generation,
    'opened_at', s.opened_at, 'open_until', s.open_until,
    'probe_successes', s.probe_successes, 'open_streak', s.streak,
    'forced', (to == 'forced_open' or to == 'forced_closed') and 1 or 0,
    'last_transition_at', NOW, 'reason', reason, 'actor', actor or '', 'note', note or '',
    'config', CONFIG_JSON, 'config_fp', CONFIG_FP)
  redis.call('PUBLISH', CHANNEL, cjson.encode({
    name = NAME, ['from'] = from, to = to, generation = s.generation, at = NOW,
    reason = reason, open_until = s.open_until, actor = actor or '', note = note or '',
  }))
  remember(s, 'transition', from, reason, actor, note)
end

-- Rewrite a hash that cannot be read: closed (or the valid state with its bad times
-- fixed), a generation above any in flight, fields and TTL set, one `repaired` event.
local function repair(s)
  local fields = table.concat(s.bad, ',')
  local generation = (s.generation or 0) + 1
  clean(s)
  if not STATES[s.state] or not s.generation or not s.open_until then
    s.state = 'closed'
  end
  -- the new generation fences every probe in flight: their leases could never be returned
  redis.call('DEL', K_PROBES)
  s.generation = generation
  s.opened_at = s.opened_at or 0
  s.open_until = s.open_until or 0
  if s.open_until > NOW + MAX_AHEAD then s.open_until = NOW + RESET end
  s.probe_successes = s.probe_successes or 0
  s.streak = s.streak or 0
  redis.call('HSET', K_STATE, 'state', s.state, 'generation', s.generation,
    'opened_at', s.opened_at, 'open_until', s.open_until,
    'probe_successes', s.probe_successes, 'open_streak', s.streak,
    'last_transition_at', NOW, 'reason', 'repaired', 'actor', '', 'note', fields,
    'config', CONFIG_JSON, 'config_fp', CONFIG_FP)
  redis.call('PUBLISH', CHANNEL, cjson.encode({
    name = NAME, ['from'] = s.state, to = s.state, generation = s.generation, at = NOW,
    reason = 'repaired', open_until = s.open_until, actor = '',
  }))
  remember(s, 'repaired', s.state, 'repaired', '', fields)
  s.bad = {}
  touch(s)
end

-- The state to act on: repaired first when the hash cannot be read as it is.
local function current_state()
  local s = load_state()
  if #s.bad > 0 then repair(s) end
  return s
end

-- The n-th consecutive open lasts min(reset * multiplier^(n-1), max_reset) spread by
-- +/- reset_jitter of itself. The spread is a hash of (now, streak): every script
-- run and the pure-Python model agree on it, with no random state.
local function open_duration(streak)
  local duration = RESET
  for _ = 2, math.min(streak, 64) do
    duration = math.floor(duration * MULTIPLIER_MILLI / 1000)
    if duration >= MAX_RESET then break end
  end
  duration = math.min(duration, MAX_RESET)
  if JITTER_PPM > 0 then
    local unit = ((NOW % 1000003) * 7919 + (streak * 104729)) % 1000003  -- 0 .. 1000002
    local spread = math.floor(duration * JITTER_PPM / 1000000)
    duration = duration - spread + math.floor(2 * spread * unit / 1000002)
  end
  return math.max(1, duration)
end

local function open(s, open_until, reason, actor, note)
  s.opened_at = NOW
  s.open_until = open_until
  s.probe_successes = 0
  redis.call('DEL', K_PROBES)
  redis.call('HINCRBY', K_STATE, 'opens_total', 1)
  transition(s, 'open', reason, actor, note)
end

-- Opened by evidence (threshold, rate or a failed probe): one more in the streak.
local function open_by_evidence(s, reason)
  s.streak = s.streak + 1
  open(s, NOW + open_duration(s.streak), reason)
end

-- Settings of another writer: remember both sides once, so status can show the conflict.
local function note_config()
  local stored = redis.call('HGET', K_STATE, 'config_fp')
  if stored and stored ~= CONFIG_FP then
    local other = redis.call('HGET', K_STATE, 'config') or ''
    redis.call('HSET', K_STATE, 'config_conflict', cjson.encode({
      at = NOW, fingerprints = { stored, CONFIG_FP }, settings = { other, CONFIG_JSON } }))
    redis.call('HSET', K_STATE, 'config', CONFIG_JSON, 'config_fp', CONFIG_FP)
    return other
  end
  redis.call('HSET', K_STATE, 'config', CONFIG_JSON, 'config_fp', CONFIG_FP)
  return ''
end

-- True (and the sequence number stored) when this worker's batch was not applied before:
-- `seq` orders a worker's batches, so a replayed script adds nothing.
local function claim_batch(worker, seq)
  if not K_CALLS or worker == '' then return false end
  local field = 's:' .. worker
  local last = tonumber(redis.call('HGET', K_CALLS, field) or '0') or 0
  if seq <= last then return false end
  redis.call('HSET', K_CALLS, field, seq)
  return true
end

-- Add a batch of counts a worker collected: "age_ms:calls:retries;..." (ages relative to
-- now, so the worker's clock does not matter).
local function apply_counts(batch)
  for age, calls, retries in string.gmatch(batch, '(%d+):(%d+):(%d+)') do
    local bucket = bucket_of(NOW - math.min(tonumber(age), WINDOW))
    if tonumber(calls) > 0 then bump('c:' .. bucket, calls) end
    if tonumber(retries) > 0 then bump('r:' .. bucket, retries) end
  end
end

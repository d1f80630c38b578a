-- distbreaker: definitions shared by every script, inserted where a script says
-- `--!include _lib.lua`. Plain Lua 5.1 in the subset that Redis and fakeredis both run.
--
-- Common KEYS:  [1] state HASH   [2] failures ZSET   [3] probes ZSET
-- Common ARGV:  [1] now_ms ('' = use the server's TIME)   [2] breaker name
--               [3] events channel   [4] failure_threshold   [5] window_ms
--               [6] reset_timeout_ms   [7] half_open_max_calls   [8] success_threshold
--               [9] probe_timeout_ms   [10] config JSON (stored for redis-cli readers)
--               [11...] script-specific
local K_STATE, K_FAILURES, K_PROBES = KEYS[1], KEYS[2], KEYS[3]
local NAME, CHANNEL = ARGV[2], ARGV[3]
local THRESHOLD = tonumber(ARGV[4])
local WINDOW = tonumber(ARGV[5])
local RESET = tonumber(ARGV[6])
local HALF_OPEN_MAX = tonumber(ARGV[7])
local SUCCESS_THRESHOLD = tonumber(ARGV[8])
local PROBE_TIMEOUT = tonumber(ARGV[9])
local CONFIG_JSON = ARGV[10]
-- Failures beyond this many are dropped oldest-first: only "threshold reached?" matters,
-- and a forced_closed breaker would otherwise grow its window without bound.
local FAILURES_CAP = math.max(THRESHOLD, 1000)
-- Manual overrides outlive ordinary idle expiry: an operator's decision should not
-- vanish after a few quiet minutes.
local FORCED_TTL = 30 * 86400 * 1000

-- Server time keeps hosts with skewed clocks in agreement; tests pass now_ms instead.
local NOW
if ARGV[1] ~= '' then
  NOW = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_state()
  local v = redis.call('HMGET', K_STATE, 'state', 'generation', 'opened_at', 'open_until',
    'probe_successes')
  return {
    state = v[1] or 'closed',
    generation = tonumber(v[2] or '0'),
    opened_at = tonumber(v[3] or '0'),
    open_until = tonumber(v[4] or '0'),
    probe_successes = tonumber(v[5] or '0'),
  }
end

-- Idle breakers vanish: a few windows / reset periods after the last write.
local function touch(s)
  local ttl = 3 * math.max(WINDOW, RESET, PROBE_TIMEOUT)
  if s.state == 'forced_open' or s.state == 'forced_closed' then ttl = FORCED_TTL end
  if s.open_until > NOW then ttl = ttl + (s.open_until - NOW) end
  redis.call('PEXPIRE', K_STATE, ttl)
  redis.call('PEXPIRE', K_FAILURES, ttl)
  redis.call('PEXPIRE', K_PROBES, ttl)
end

-- Every transition: a new generation (fencing late outcomes), one hash write, one event.
local function transition(s, to, reason)
  local from = s.state
  s.state = to
  s.generation = s.generation + 1
  redis.call('HSET', K_STATE, 'state', to, 'generation', s.generation,
    'opened_at', s.opened_at, 'open_until', s.open_until,
    'probe_successes', s.probe_successes, 'forced', (to == 'forced_open' or to == 'forced_closed') and 1 or 0,
    'last_transition_at', NOW, 'config', CONFIG_JSON)
  redis.call('PUBLISH', CHANNEL, cjson.encode({
    name = NAME, ['from'] = from, to = to, generation = s.generation, at = NOW,
    reason = reason, open_until = s.open_until,
  }))
end

local function open(s, open_until, reason)
  s.opened_at = NOW
  s.open_until = open_until
  s.probe_successes = 0
  redis.call('DEL', K_PROBES)
  redis.call('HINCRBY', K_STATE, 'opens_total', 1)
  transition(s, 'open', reason)
end

-- Failures inside the window: score > NOW - WINDOW.
local function failures_in_window()
  return redis.call('ZCOUNT', K_FAILURES, '(' .. (NOW - WINDOW), '+inf')
end

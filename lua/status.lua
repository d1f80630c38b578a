#!lua flags=no-writes
-- distbreaker status: read one breaker without changing it. The flag above lets Redis 7
-- run it with EVALSHA_RO: on a read-only replica, and for an ACL user with read access
-- only (`%R~<prefix>:*`). Older servers (and fakeredis) get this text without that line.
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
-- ARGV: [1..7] common (see _lib.lua)
-- Reply: { state, generation, opened_at, open_until, failures_in_window, failures_total,
--          opens_total, last_failure_at, last_transition_at, probe_successes,
--          probes_in_flight, now_ms, calls_in_window, rate_failures_in_window,
--          retries_in_window, reporters_in_window, open_streak, would_refuse_total,
--          reason, actor, note, malformed (comma-separated names of unreadable fields and
--          of keys holding a foreign value, '' = none),
--          config_conflict (JSON, ''), config (JSON, ''), locally_open (reporters, '') }
--   (times in ms since the epoch, 0 = never). A hash that cannot be read is shown as the
--   scripts would repair it (closed unless its state is readable), with `malformed` set.
--!include _lib.lua
local s = load_state()
-- a foreign value under a key's name reads as empty (the next writer drops it)
local function foreign(key)
  for _, name in ipairs(s.foreign) do
    if name == key then return true end
  end
  return false
end
local extra = {}
if not foreign(K_STATE) then
  extra = redis.call('HMGET', K_STATE, 'reason', 'actor', 'note', 'config_conflict', 'config')
end
local function counter(name, high)
  return clamp(s.counters[name] or 0, 0, high or MAX_INT)
end
local failures_total = counter('failures_total')
local opens_total = counter('opens_total')
local last_failure_at = counter('last_failure_at', NOW)
local last_transition_at = counter('last_transition_at', NOW)
local would_refuse = counter('would_refuse_total')
if not STATES[s.state] or not s.generation or not s.open_until then s.state = 'closed' end
local open_until = s.open_until or 0
if open_until > NOW + MAX_AHEAD then open_until = NOW + RESET end
local function count_in(key, low)
  if not key or foreign(key) then return 0 end
  return redis.call('ZCOUNT', key, low, '+inf')
end
local calls, rate_failures, retries = 0, 0, 0
if not foreign(K_CALLS) then calls, rate_failures, retries = window_counts(true) end
local function text(value)
  if type(value) ~= 'string' then return '' end
  return value
end
local window_floor = '(' .. (NOW - WINDOW)
return {
  s.state, s.generation or 0, clamp(s.opened_at or 0, 0, NOW), open_until,
  count_in(K_FAILURES, window_floor), failures_total, opens_total, last_failure_at,
  last_transition_at, s.probe_successes or 0, count_in(K_PROBES, '(' .. NOW), NOW, calls,
  rate_failures, retries, count_in(K_REPORTERS, window_floor), s.streak or 0, would_refuse,
  text(extra[1]), text(extra[2]), text(extra[3]), table.concat(s.bad, ','), text(extra[4]),
  text(extra[5]), locally_open(),
}

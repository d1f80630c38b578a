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
--          reason, actor, note, malformed (comma-separated field names, '' = none),
--          config_conflict (JSON, ''), config (JSON, '') }
--   (times in ms since the epoch, 0 = never). A hash that cannot be read is shown as the
--   scripts would repair it (closed unless its state is readable), with `malformed` set.
--!include _lib.lua
local s = load_state()
local extra = redis.call('HMGET', K_STATE, 'failures_total', 'opens_total', 'last_failure_at',
  'last_transition_at', 'would_refuse_total', 'reason', 'actor', 'note', 'config_conflict',
  'config')
local bad = s.bad
local function counter(value, name)
  return stored_int(value, name, bad) or 0
end
local failures_total = counter(extra[1], 'failures_total')
local opens_total = counter(extra[2], 'opens_total')
local last_failure_at = clamp(counter(extra[3], 'last_failure_at'), 0, NOW)
local last_transition_at = clamp(counter(extra[4], 'last_transition_at'), 0, NOW)
local would_refuse = counter(extra[5], 'would_refuse_total')
if not STATES[s.state] or not s.generation or not s.open_until then s.state = 'closed' end
local open_until = s.open_until or 0
if open_until > NOW + MAX_AHEAD then open_until = NOW + RESET end
local calls, rate_failures, retries = window_counts(true)
local function text(value)
  if type(value) ~= 'string' then return '' end
  return value
end
return {
  s.state, s.generation or 0, clamp(s.opened_at or 0, 0, NOW), open_until, failures_in_window(),
  failures_total, opens_total, last_failure_at, last_transition_at, s.probe_successes or 0,
  redis.call('ZCOUNT', K_PROBES, '(' .. NOW, '+inf'), NOW, calls, rate_failures, retries,
  reporters_in_window(), s.streak or 0, would_refuse, text(extra[6]), text(extra[7]),
  text(extra[8]), table.concat(bad, ','), text(extra[9]), text(extra[10]),
}

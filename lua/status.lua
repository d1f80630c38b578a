-- distbreaker status: read one breaker without changing it (safe on a replica, and with
-- a read-only ACL user).
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
-- ARGV: [1..7] common (see _lib.lua)
-- Reply: { state, generation, opened_at, open_until, failures_in_window, failures_total,
--          opens_total, last_failure_at, last_transition_at, probe_successes,
--          probes_in_flight, now_ms, calls_in_window, rate_failures_in_window,
--          retries_in_window, reporters_in_window, open_streak, would_refuse_total,
--          reason, actor, note, malformed (comma-separated field names, '' = none),
--          config_conflict (JSON, ''), config (JSON, ''), locally_open (reporters, '') }
--   (times in ms since the epoch, 0 = never). A hash that cannot be read is shown as the
--   scripts would repair it (closed unless its state is readable), with `malformed` set.
--!include _lib.lua
local s = load_state()
local extra = redis.call('HMGET', K_STATE, 'reason', 'actor', 'note', 'config_conflict',
  'config')
local bad = s.bad
local function counter(name) return s.counters[name] or 0 end
local failures_total = counter('failures_total')
local opens_total = counter('opens_total')
local last_failure_at = clamp(counter('last_failure_at'), 0, NOW)
local last_transition_at = clamp(counter('last_transition_at'), 0, NOW)
local would_refuse = counter('would_refuse_total')
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
  reporters_in_window(), s.streak or 0, would_refuse, text(extra[1]), text(extra[2]),
  text(extra[3]), table.concat(bad, ','), text(extra[4]), text(extra[5]), locally_open(),
}

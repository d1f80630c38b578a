-- distbreaker status: read one breaker without changing it.
--
-- KEYS: [1] state HASH  [2] failures ZSET  [3] probes ZSET
-- ARGV: [1..10] common (see _lib.lua)
-- Reply: { state, generation, opened_at, open_until, failures_in_window, failures_total,
--          opens_total, last_failure_at, last_transition_at, probe_successes,
--          probes_in_flight, now_ms }   (times in ms since the epoch, 0 = never)
--!include _lib.lua
local s = load_state()
local extra = redis.call('HMGET', K_STATE, 'failures_total', 'opens_total', 'last_failure_at',
  'last_transition_at')
return {
  s.state, s.generation, s.opened_at, s.open_until, failures_in_window(),
  tonumber(extra[1] or '0'), tonumber(extra[2] or '0'), tonumber(extra[3] or '0'),
  tonumber(extra[4] or '0'), s.probe_successes,
  redis.call('ZCOUNT', K_PROBES, '(' .. NOW, '+inf'), NOW,
}

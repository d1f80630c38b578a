-- distbreaker control: manual and upstream-driven overrides, fleet-wide.
--
-- KEYS: [1] state HASH  [2] failures ZSET  [3] probes ZSET
-- ARGV: [1..10] common (see _lib.lua)
--       [11] command: 'force_open' | 'force_closed' | 'reset' | 'hold_open'
--       [12] hold_ms (hold_open only)  [13] reason text (hold_open only)
-- Reply: { changed 0|1, state, generation, open_until_ms, now_ms }
--
-- force_open isolates (refuse until released); force_closed disables (always admit, still
-- count); reset returns to closed with an empty window. hold_open opens the breaker until
-- now + hold_ms (an upstream said when to come back); an open breaker is only ever
-- extended, never shortened, and a forced state wins over it.
--!include _lib.lua
local COMMAND = ARGV[11]
local s = load_state()
local changed = 0

if COMMAND == 'force_open' or COMMAND == 'force_closed' then
  local target = (COMMAND == 'force_open') and 'forced_open' or 'forced_closed'
  if s.state ~= target then
    s.probe_successes = 0
    redis.call('DEL', K_PROBES)
    transition(s, target, COMMAND)
    changed = 1
  end
elseif COMMAND == 'reset' then
  redis.call('DEL', K_FAILURES, K_PROBES)
  s.probe_successes = 0
  s.open_until = 0
  if s.state ~= 'closed' then
    transition(s, 'closed', 'reset')
  else
    redis.call('HSET', K_STATE, 'probe_successes', 0, 'open_until', 0, 'forced', 0)
  end
  changed = 1
elseif COMMAND == 'hold_open' then
  local hold_until = NOW + math.max(0, tonumber(ARGV[12]))
  local reason = 'hold_open'
  if ARGV[13] ~= '' then reason = 'hold_open: ' .. ARGV[13] end
  if s.state == 'forced_open' or s.state == 'forced_closed' then
    changed = 0
  elseif s.state == 'open' then
    if hold_until > s.open_until then
      s.open_until = hold_until
      redis.call('HSET', K_STATE, 'open_until', hold_until)
      changed = 1
    end
  else
    redis.call('HSET', K_STATE, 'hold_reason', reason)
    open(s, hold_until, reason)
    changed = 1
  end
else
  return redis.error_reply('distbreaker: unknown control command ' .. tostring(COMMAND))
end
if changed == 1 then touch(s) end
return { changed, s.state, s.generation, s.open_until, NOW }

-- distbreaker control: an operator's overrides, fleet-wide.
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
--       [7] control HASH (the last command; written first, see below)
-- ARGV: [1..7] common (see _lib.lua)
--       [8] command: 'force_open' | 'force_closed' | 'reset' | 'hold_open'
--       [9] hold_ms (hold_open only)  [10] reason text  [11] actor ('user@host')
-- Reply: { changed 0|1, state, generation, open_until_ms, now_ms }
--
-- force_open isolates (refuse until released); force_closed disables (always admit, still
-- count); reset returns to closed with an empty window and repairs whatever the hash held.
-- hold_open opens the breaker until now + hold_ms; an open breaker is only ever extended,
-- never shortened, and a forced state wins over it. Every command leaves a history entry
-- with its actor and reason.
--
-- Least privilege: the first write is to the control key. A Redis user that may only read
-- it (ACL `%R~<prefix>:*:control`, the worker role) is refused by Redis itself there,
-- before anything else changed.
--!include _lib.lua
local K_CONTROL = KEYS[7]
local COMMAND, REASON, ACTOR = ARGV[8], ARGV[10], ARGV[11]
if COMMAND ~= 'force_open' and COMMAND ~= 'force_closed' and COMMAND ~= 'reset'
    and COMMAND ~= 'hold_open' then
  return redis.error_reply('distbreaker: unknown control command ' .. tostring(COMMAND))
end
local control_type = key_type(K_CONTROL)
if control_type ~= 'none' and control_type ~= 'hash' then
  redis.call('DEL', K_CONTROL)  -- a foreign value: still the first write, refused the same way
end
redis.call('HSET', K_CONTROL, 'command', COMMAND, 'actor', ACTOR, 'reason', REASON, 'at', NOW)
redis.call('PEXPIRE', K_CONTROL, FORCED_TTL)

local s = load_state()
local changed = 0

if COMMAND == 'reset' then
  -- reset repairs by rewriting every field, whatever it held
  clean(s)
  local old = STATES[s.state] and s.state or 'closed'
  s.state = old
  s.generation = s.generation or 0
  s.opened_at, s.open_until, s.probe_successes, s.streak = 0, 0, 0, 0
  clear_window()
  if old ~= 'closed' or #s.bad > 0 then
    transition(s, 'closed', 'reset', ACTOR, REASON)
  else
    redis.call('HSET', K_STATE, 'probe_successes', 0, 'open_until', 0, 'open_streak', 0,
      'forced', 0)
    remember(s, 'command', 'closed', 'reset', ACTOR, REASON)
  end
  touch(s)
  return { 1, s.state, s.generation, s.open_until, NOW }
end

if #s.bad > 0 then repair(s) end
if COMMAND == 'force_open' or COMMAND == 'force_closed' then
  local target = (COMMAND == 'force_open') and 'forced_open' or 'forced_closed'
  if s.state ~= target then
    s.probe_successes = 0
    redis.call('DEL', K_PROBES)
    transition(s, target, COMMAND, ACTOR, REASON)
    changed = 1
  else
    remember(s, 'command', s.state, COMMAND, ACTOR, REASON)
  end
else -- hold_open
  local hold_until = NOW + math.min(math.max(0, tonumber(ARGV[9]) or 0), 7 * 86400 * 1000)
  local reason = 'hold_open'
  if REASON ~= '' then reason = 'hold_open: ' .. REASON end
  if s.state == 'forced_open' or s.state == 'forced_closed' then
    remember(s, 'command', s.state, 'hold_open (a forced state wins)', ACTOR, REASON)
  elseif s.state == 'open' then
    if hold_until > s.open_until then
      s.open_until = hold_until
      redis.call('HSET', K_STATE, 'open_until', hold_until, 'reason', reason, 'actor', ACTOR,
        'note', REASON)
      changed = 1
    end
    remember(s, 'command', 'open', reason, ACTOR, REASON)
  else
    open(s, hold_until, reason, ACTOR, REASON)
    changed = 1
  end
end
if changed == 1 then touch(s) end
return { changed, s.state, s.generation, s.open_until, NOW }

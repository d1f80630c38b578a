-- distbreaker record: report the outcome of an admitted call.
--
-- KEYS: [1] state HASH  [2] failures ZSET  [3] probes ZSET
-- ARGV: [1..10] common (see _lib.lua)  [11] call id  [12] generation at admission
--       [13] outcome: 'failure' | 'success' | 'release' (an outcome that says nothing)
-- Reply: { applied 0|1, state, generation, open_until_ms, now_ms }
--
-- A failure always enters the window (score = now, member = call id, so a replayed
-- script adds nothing). It can change state only if the call was admitted in the current
-- generation: closed opens when the window holds failure_threshold failures; a half_open
-- probe failure reopens at once. A probe success counts toward success_threshold and then
-- closes the breaker and clears the window. Successes in closed are never sent here.
--!include _lib.lua
local CALL_ID = ARGV[11]
local GENERATION = tonumber(ARGV[12])
local OUTCOME = ARGV[13]
local s = load_state()
local current = GENERATION == s.generation

if OUTCOME == 'failure' then
  if redis.call('ZADD', K_FAILURES, 'NX', NOW, CALL_ID) == 0 then
    return { 0, s.state, s.generation, s.open_until, NOW }
  end
  redis.call('ZREMRANGEBYSCORE', K_FAILURES, '-inf', NOW - WINDOW)
  local count = redis.call('ZCARD', K_FAILURES)
  if count > FAILURES_CAP then
    redis.call('ZREMRANGEBYRANK', K_FAILURES, 0, count - FAILURES_CAP - 1)
    count = FAILURES_CAP
  end
  redis.call('HINCRBY', K_STATE, 'failures_total', 1)
  redis.call('HSET', K_STATE, 'last_failure_at', NOW, 'config', CONFIG_JSON)
  if current and s.state == 'closed' and count >= THRESHOLD then
    open(s, NOW + RESET, 'failure_threshold')
  elseif current and s.state == 'half_open' then
    open(s, NOW + RESET, 'probe_failed')
  end
  touch(s)
  return { 1, s.state, s.generation, s.open_until, NOW }
end

-- success or release: only a live probe lease of the current half_open generation matters
if not current or s.state ~= 'half_open' then
  return { 0, s.state, s.generation, s.open_until, NOW }
end
if redis.call('ZREM', K_PROBES, CALL_ID) == 0 then
  return { 0, s.state, s.generation, s.open_until, NOW }
end
if OUTCOME == 'success' then
  s.probe_successes = s.probe_successes + 1
  if s.probe_successes >= SUCCESS_THRESHOLD then
    s.probe_successes = 0
    redis.call('DEL', K_FAILURES, K_PROBES)
    transition(s, 'closed', 'probe_succeeded')
  else
    redis.call('HSET', K_STATE, 'probe_successes', s.probe_successes)
  end
end
touch(s)
return { 1, s.state, s.generation, s.open_until, NOW }

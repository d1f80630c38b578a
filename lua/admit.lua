-- distbreaker admit: may this call go to the upstream?
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
-- ARGV: [1..7] common (see _lib.lua)  [8] call id, unique per call
-- Reply: { allowed 0|1, state, generation, retry_after_ms (-1 = unknown), probe 0|1,
--          open_until_ms }
--
-- closed / forced_closed admit without writing. open refuses until open_until, then the
-- first caller moves the breaker to half_open. half_open hands out at most
-- half_open_max_calls probe leases; a lease expires after probe_timeout so a crashed
-- prober frees its slot. The call id is the lease member, so a replay takes no new slot.
-- With enforce=0 (dry run) the same decisions are made and reported, but the caller
-- decides to go ahead anyway.

-- Fast path, before the shared definitions (and their TIME call): a closed breaker with a
-- readable generation and a TTL admits with one HMGET and one PTTL. This is every healthy
-- call in consistency="strict". Anything else goes the long way, which repairs.
-- (pcall: a foreign value under the state key's name is repaired on the long way)
local quick = redis.pcall('HMGET', KEYS[1], 'state', 'generation')
if quick.err then
  quick = {}
elseif not quick[1] then
  return { 1, 'closed', 0, 0, 0, 0 }
end
if quick[1] == 'closed' or quick[1] == 'forced_closed' then
  local generation = tonumber(quick[2] or '0')
  if generation and generation >= 0 and generation <= 9007199254740991
      and math.floor(generation) == generation and redis.call('PTTL', KEYS[1]) >= 0 then
    return { 1, quick[1], generation, 0, 0, 0 }
  end
end
--!include _lib.lua
local CALL_ID = ARGV[8]
local s = load_state()
if #s.bad > 0 then
  repair(s)
elseif redis.call('PTTL', K_STATE) == -1 then
  touch(s)  -- written by hand without an expiry: give it one
end

if s.state == 'forced_open' then
  return { 0, s.state, s.generation, -1, 0, 0 }
end
if s.state == 'closed' or s.state == 'forced_closed' then
  return { 1, s.state, s.generation, 0, 0, 0 }
end
if s.state == 'open' then
  if NOW < s.open_until then
    return { 0, 'open', s.generation, s.open_until - NOW, 0, s.open_until }
  end
  s.probe_successes = 0
  redis.call('DEL', K_PROBES)
  transition(s, 'half_open', 'reset_timeout')
end

-- half_open: expired leases go, and so do leases no writer could have given (a probe
-- timeout is at most a day), which would otherwise hold their slot forever
redis.call('ZREMRANGEBYSCORE', K_PROBES, '-inf', NOW)
redis.call('ZREMRANGEBYSCORE', K_PROBES, '(' .. (NOW + 86400 * 1000), '+inf')
if redis.call('ZSCORE', K_PROBES, CALL_ID) then
  return { 1, 'half_open', s.generation, 0, 1, 0 }
end
if redis.call('ZCARD', K_PROBES) >= HALF_OPEN_MAX then
  local first = redis.call('ZRANGE', K_PROBES, 0, 0, 'WITHSCORES')
  return { 0, 'half_open', s.generation, math.max(0, tonumber(first[2]) - NOW), 0, 0 }
end
redis.call('ZADD', K_PROBES, NOW + PROBE_TIMEOUT, CALL_ID)
touch(s)
return { 1, 'half_open', s.generation, 0, 1, 0 }

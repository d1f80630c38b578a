-- distbreaker admit: may this call go to the upstream?
--
-- KEYS: [1] state HASH  [2] failures ZSET  [3] probes ZSET   (one hash tag: one slot)
-- ARGV: [1..10] common (see _lib.lua)  [11] call id, unique per call
-- Reply: { allowed 0|1, state, generation, retry_after_ms (-1 = unknown), probe 0|1,
--          open_until_ms }
--
-- closed / forced_closed admit without writing. open refuses until open_until, then the
-- first caller moves the breaker to half_open. half_open hands out at most
-- half_open_max_calls probe leases; a lease expires after probe_timeout so a crashed
-- prober frees its slot. The call id is the lease member, so a replay takes no new slot.

-- Fast path, before the shared definitions (and their TIME call): a closed breaker admits
-- with one HMGET. This is every healthy call in consistency="strict".
local quick = redis.call('HMGET', KEYS[1], 'state', 'generation')
if not quick[1] or quick[1] == 'closed' or quick[1] == 'forced_closed' then
  return { 1, quick[1] or 'closed', tonumber(quick[2] or '0'), 0, 0, 0 }
end
--!include _lib.lua
local CALL_ID = ARGV[11]
local s = load_state()

if s.state == 'forced_open' then
  return { 0, s.state, s.generation, -1, 0, 0 }
end
if s.state == 'open' then
  if NOW < s.open_until then
    return { 0, 'open', s.generation, s.open_until - NOW, 0, s.open_until }
  end
  s.probe_successes = 0
  redis.call('DEL', K_PROBES)
  transition(s, 'half_open', 'reset_timeout')
end

-- half_open
redis.call('ZREMRANGEBYSCORE', K_PROBES, '-inf', NOW)
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

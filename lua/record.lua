-- distbreaker record: report the outcome of an admitted call.
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
-- ARGV: [1..7] common (see _lib.lua)  [8] call id  [9] generation at admission
--       [10] outcome: 'failure' | 'success' | 'release' (an outcome that says nothing) |
--            'hold' (the upstream asked for a pause: open until now + hold_ms)
--       [11] hold_ms ('hold')  [12] reason text ('hold')
--       [13] piggy-backed batch of counts, "age_ms:calls:retries;..." ('' = none)
--       [14] worker id  [15] batch sequence number
-- Reply: { applied 0|1, state, generation, open_until_ms, now_ms, local_trip 0|1,
--          calls_in_window, failures_in_window, retries_in_window, reporters_in_window,
--          other_config_json ('' unless another writer's settings differ) }
--
-- A failure always enters the window (score = now, member = call id, so a replayed
-- script adds nothing) and the calls buckets, and marks its reporter. It can change
-- state only if the call was admitted in the current generation: closed opens when the
-- rule is met (failure_threshold failures in the window, or with the rate rule at least
-- minimum_calls calls and failures/calls >= the rate) by at least min_reporters distinct
-- reporters; met by fewer, the breaker stays closed and local_trip=1 tells the reporter to
-- protect itself. A half_open probe failure reopens at once. A probe success counts
-- toward success_threshold and then closes the breaker and clears the window. Successes
-- in closed are never sent here one by one: they arrive in batches.
--
-- 'hold' is a worker's rate-limit pause (at most an hour, never part of the open streak);
-- an open breaker is only ever extended, and a forced state wins over it.
--!include _lib.lua
local CALL_ID = ARGV[8]
local GENERATION = tonumber(ARGV[9])
local OUTCOME = ARGV[10]
local s = current_state()
local current = GENERATION == s.generation
local other_config = note_config()
if ARGV[13] ~= '' and claim_batch(ARGV[14], tonumber(ARGV[15]) or 0) then
  apply_counts(ARGV[13])
end

local function reply(applied, local_trip)
  touch(s)  -- note_config may have written: nothing stays without a TTL
  local calls, failures, retries = window_counts(false)
  return { applied, s.state, s.generation, s.open_until, NOW, local_trip, calls, failures,
    retries, reporters_in_window(), other_config }
end

if OUTCOME == 'hold' then
  local hold_until = NOW + math.min(math.max(0, tonumber(ARGV[11]) or 0), 3600 * 1000)
  local reason = 'hold_open'
  if ARGV[12] ~= '' then reason = 'hold_open: ' .. ARGV[12] end
  local changed = 0
  if s.state == 'open' then
    if hold_until > s.open_until then
      s.open_until = hold_until
      redis.call('HSET', K_STATE, 'open_until', hold_until, 'reason', reason)
      remember(s, 'hold', 'open', reason)
      changed = 1
    end
  elseif s.state ~= 'forced_open' and s.state ~= 'forced_closed' then
    open(s, hold_until, reason)
    changed = 1
  end
  if changed == 1 then touch(s) end
  return reply(changed, 0)
end

if OUTCOME == 'failure' then
  if redis.call('ZADD', K_FAILURES, 'NX', NOW, CALL_ID) == 0 then
    return reply(0, 0)
  end
  redis.call('ZREMRANGEBYSCORE', K_FAILURES, '-inf', NOW - WINDOW)
  local count = redis.call('ZCARD', K_FAILURES)
  if count > FAILURES_CAP then
    redis.call('ZREMRANGEBYRANK', K_FAILURES, 0, count - FAILURES_CAP - 1)
    count = FAILURES_CAP
  end
  local bucket = bucket_of(NOW)
  bump('c:' .. bucket, 1)
  bump('f:' .. bucket, 1)
  redis.call('ZADD', K_REPORTERS, NOW, REPORTER)
  redis.call('ZREMRANGEBYSCORE', K_REPORTERS, '-inf', NOW - WINDOW)
  redis.call('HINCRBY', K_STATE, 'failures_total', 1)
  redis.call('HSET', K_STATE, 'last_failure_at', NOW)
  local local_trip = 0
  if current and s.state == 'closed' then
    local met
    if RATE_PPM > 0 then
      local calls, failures = window_counts(false)
      met = calls >= MINIMUM_CALLS and failures * 1000000 >= RATE_PPM * calls
    else
      met = count >= THRESHOLD
    end
    if met and reporters_in_window() >= MIN_REPORTERS then
      open_by_evidence(s, RATE_PPM > 0 and 'failure_rate' or 'failure_threshold')
    elseif met then
      local_trip = 1
    end
  elseif current and s.state == 'half_open' then
    open_by_evidence(s, 'probe_failed')
  end
  touch(s)
  return reply(1, local_trip)
end

-- release: give back a lease this call may hold, whatever the generation (an admission
-- whose reply was lost sends one: the script may have run)
if OUTCOME == 'release' then
  if s.state ~= 'half_open' or redis.call('ZREM', K_PROBES, CALL_ID) == 0 then
    return reply(0, 0)
  end
  return reply(1, 0)
end
-- success: only a live probe lease of the current half_open generation matters
if not current or s.state ~= 'half_open' then
  return reply(0, 0)
end
if redis.call('ZREM', K_PROBES, CALL_ID) == 0 then
  return reply(0, 0)
end
if OUTCOME == 'success' then
  s.probe_successes = s.probe_successes + 1
  if s.probe_successes >= SUCCESS_THRESHOLD then
    s.probe_successes = 0
    s.streak = 0
    clear_window()
    transition(s, 'closed', 'probe_succeeded')
  else
    redis.call('HSET', K_STATE, 'probe_successes', s.probe_successes)
  end
end
touch(s)
return reply(1, 0)

-- distbreaker report: a worker's batch of counts, sent at most once per report_interval
-- from off the call path (failures are recorded one by one by record.lua, at once).
--
-- KEYS: [1] state  [2] failures  [3] probes  [4] history  [5] calls  [6] reporters
-- ARGV: [1..7] common (see _lib.lua)  [8] batch "age_ms:calls:retries;..."
--       [9] worker id  [10] batch sequence number (a replay adds nothing)
--       [11] calls a dry-run breaker would have refused since the last batch
--       [12] until when this reporter is open on its own (ms; 0 = it is not)
-- Reply: { state, generation, open_until_ms, now_ms, calls_in_window, failures_in_window,
--          retries_in_window, reporters_in_window }
--
-- Successes only ever lower the failure rate, so a report never opens the breaker; the
-- totals it returns let each worker decide fleet-wide retry budgets with no extra trip.
-- A reporter open on its own (too few reporters fail for the fleet to open) says so in
-- the calls hash (`l:<reporter>` = until), so status shows who protects itself.
--!include _lib.lua
local s = load_state()
if #s.bad > 0 then repair(s) end
if claim_batch(ARGV[9], tonumber(ARGV[10]) or 0) then
  apply_counts(ARGV[8])
  local refused = tonumber(ARGV[11]) or 0
  if refused > 0 then redis.call('HINCRBY', K_STATE, 'would_refuse_total', refused) end
  local open_until = tonumber(ARGV[12]) or 0
  if open_until > NOW then
    redis.call('HSET', K_CALLS, 'l:' .. REPORTER, open_until)
  else
    redis.call('HDEL', K_CALLS, 'l:' .. REPORTER)
  end
end
touch(s)
local calls, failures, retries = window_counts(false)
return { s.state, s.generation, s.open_until, NOW, calls, failures, retries,
  reporters_in_window() }

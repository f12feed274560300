-- fail: records failed attempts (a nack, or leases that expired) with the outcome the caller
-- computed from the core's rules: back to pending (on the stream at once when the retry time
-- has come, else in the app's retry set) or dead (into the dead-letter indexes, releasing the
-- next delivery of an ordered entity). Each item must still be in flight on the attempt the
-- caller read (and, for expiry, its deadline passed); `strict` turns a mismatch into
-- 'changed' with nothing done, otherwise that item is skipped.
-- ARGV: now, strict ('1'|'0'), expiry ('1'|'0'), outcome, count, then per item:
--   n, attempt read, new status ('0'|'3'), retry time, error.
-- Returns {'ok', n...} (the items applied) or {'changed'}.
local now, strict, expiry, outcome = ARGV[1], ARGV[2] == '1', ARGV[3] == '1', ARGV[4]
local count = tonumber(ARGV[5])
local function item(j)
  local b = 6 + j * 5
  return ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
end
local function current(n, at)
  local h = redis.call('HMGET', dkey(n), 'st', 'at', 'ls')
  if h[1] ~= '1' or h[2] ~= at then return false end
  if expiry and (not h[3] or tonumber(h[3]) > tonumber(now)) then return false end
  return true
end
if strict then
  for j = 0, count - 1 do
    local n, at = item(j)
    if not current(n, at) then return { 'changed' } end
  end
end
local applied = { 'ok' }
for j = 0, count - 1 do
  local n, at, status, retry_at, err = item(j)
  if not strict and redis.call('HGET', dkey(n), 'st') ~= '1' then
    -- Not in flight any more: whoever changed it took it off sb:leases; make sure.
    redis.call('ZREM', 'sb:leases', n)
  elseif strict or current(n, at) then
    local k = dkey(n)
    local h = redis.call('HMGET', k, 't', 'ok', 'tk', 'src')
    local target, tk, src = h[1], h[3], h[4]
    local was_failing = 0
    if redis.call('HINCRBY', k, 'fa', 1) > 1 then was_failing = 1 end
    gauge(tk, src, target, 'i', -1)
    flow(tk, src, target, now, 'f', 1)
    local av = now
    if status == '0' then av = retry_at end
    redis.call('HSET', k, 'st', status, 'av', av, 'le', err, 'up', now,
      'f' .. at, now, 'o' .. at, outcome, 'x' .. at, err)
    redis.call('HDEL', k, 'ls')
    redis.call('ZREM', 'sb:leases', n)
    unqueue(target, n)
    if status == '0' then
      gauge(tk, src, target, 'p', 1)
      gauge(tk, src, target, 'f', 1 - was_failing)
      if tonumber(retry_at) <= tonumber(now) then
        enqueue(target, n)
      else
        redis.call('ZADD', 'sb:r:' .. target, retry_at, n)
      end
    else
      redis.call('ZREM', open_key(h[3]), n)
      gauge(tk, src, target, 'd', 1)
      gauge(tk, src, target, 'f', -was_failing)
      flow(tk, src, target, now, 'x', 1)
      closed(tk, src, target, n)
      for _, key in ipairs(dead_keys(h[3], target, h[4])) do
        redis.call('ZADD', key, n, n)
      end
      finished(n, h[2], target, now)
    end
    wake(target)
    applied[#applied + 1] = n
  end
end
send_wakes()
return applied

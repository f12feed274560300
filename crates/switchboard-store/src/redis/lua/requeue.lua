-- requeue: dead deliveries back to pending with a fresh attempt budget (budget base = the
-- attempts used so far), blocked behind an open delivery of the same ordered entity if
-- there is one, with the requeue recorded. Each must still be dead on the attempt read;
-- `strict` (by ids) turns a mismatch into 'changed', otherwise (by filter) it is skipped.
-- ARGV: now, by, strict ('1'|'0'), count, then per item: n, attempt read.
-- Returns {'ok', n...} (the items applied) or {'changed'}.
local now, by, strict, count = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
local function current(n, at)
  local h = redis.call('HMGET', dkey(n), 'st', 'at')
  return h[1] == '3' and h[2] == at
end
if strict then
  for j = 0, count - 1 do
    if not current(ARGV[5 + j * 2], ARGV[6 + j * 2]) then return { 'changed' } end
  end
end
local applied = { 'ok' }
for j = 0, count - 1 do
  local n, at = ARGV[5 + j * 2], ARGV[6 + j * 2]
  if strict or current(n, at) then
    local k = dkey(n)
    local h = redis.call('HMGET', k, 't', 'ok', 'tk', 'src', 'fa', 'cr')
    local target, okey, tk, src = h[1], h[2], h[3], h[4]
    gauge(tk, src, target, 'd', -1)
    gauge(tk, src, target, 'p', 1)
    if tonumber(h[5] or '0') > 0 then gauge(tk, src, target, 'f', 1) end
    opened(tk, src, target, n, h[6])
    local blocked = '0'
    if okey then
      if redis.call('ZCARD', okey) > 0 then blocked = '1' end
      redis.call('ZADD', okey, n, n)
    end
    redis.call('HSET', k, 'st', '0', 'bb', at, 'av', now, 'up', now, 'bl', blocked)
    local r = S(redis.call('HINCRBY', k, 'rq', 1))
    redis.call('HSET', k, 'r' .. r, now .. '|' .. by)
    for _, key in ipairs(dead_keys(h[3], target, h[4])) do
      redis.call('ZREM', key, n)
    end
    redis.call('ZADD', open_key(h[3]), n, n)
    if blocked == '0' then
      enqueue(target, n)
      wake(target)
    end
    applied[#applied + 1] = n
  end
end
send_wakes()
return applied

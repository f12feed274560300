-- ack: acknowledges deliveries the caller validated, all or nothing. Each must still be in
-- flight on the attempt the caller read, else nothing changes and 'changed' comes back (the
-- caller reads again).
-- ARGV: now, count, then per item: n, attempt read, ack data ('' for none, '=' .. data),
--   publish → ack latency (ms) and its histogram bucket.
-- Returns {'ok', count} or {'changed'}.
local now, count = ARGV[1], tonumber(ARGV[2])
for j = 0, count - 1 do
  local n, at = ARGV[3 + j * 5], ARGV[4 + j * 5]
  local h = redis.call('HMGET', dkey(n), 'st', 'at')
  if h[1] ~= '1' or h[2] ~= at then return { 'changed' } end
end
for j = 0, count - 1 do
  local b = 3 + j * 5
  local n, at, data, latency, bucket = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local k = dkey(n)
  local h = redis.call('HMGET', k, 't', 'ok', 'tk', 'src', 'fa')
  redis.call('HSET', k, 'st', '2', 'ak', now, 'up', now, 'f' .. at, now, 'o' .. at, 'acknowledged')
  if data ~= '' then
    redis.call('HSET', k, 'ad', string.sub(data, 2))
  else
    redis.call('HDEL', k, 'ad')
  end
  redis.call('HDEL', k, 'ls')
  redis.call('ZREM', 'sb:leases', n)
  unqueue(h[1], n)
  redis.call('ZREM', open_key(h[3]), n)
  local tk, src, tgt = h[3], h[4], h[1]
  gauge(tk, src, tgt, 'i', -1)
  gauge(tk, src, tgt, 'A', 1)
  if tonumber(h[5] or '0') > 0 then gauge(tk, src, tgt, 'f', -1) end
  flow(tk, src, tgt, now, 'a', 1)
  flow(tk, src, tgt, now, 'ls', tonumber(latency))
  flow(tk, src, tgt, now, 'b' .. bucket, 1)
  closed(tk, src, tgt, n)
  finished(n, h[2], h[1], now)
end
send_wakes()
return { 'ok', count }

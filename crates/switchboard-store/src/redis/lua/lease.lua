-- lease: hands out up to `max` ready deliveries of an app. Retries whose backoff is over
-- move from the app's retry set to the end of its stream first; then XREADGROUP reads new
-- entries into the PEL, and each becomes in flight with its own deadline in sb:leases.
-- ARGV: app, now, max, deadline.
-- Returns {{n, attempt, event id}...} and, when nothing was ready, the earliest retry time.
local app, now, max, deadline = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local q = qkey(app)
redis.call('HSET', 'sb:consumed', app, now)
local rkey = 'sb:r:' .. app
local due = redis.call('ZRANGEBYSCORE', rkey, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
local ready = {}
for j = 1, #due, 2 do ready[#ready + 1] = { due[j], tonumber(due[j + 1]) } end
table.sort(ready, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return tonumber(a[1]) < tonumber(b[1])
end)
for _, r in ipairs(ready) do
  redis.call('ZREM', rkey, r[1])
  enqueue(app, r[1])
end
local out = {}
if redis.call('EXISTS', q) == 1 then
  while #out < max do
    local got = redis.call('XREADGROUP', 'GROUP', G, G, 'COUNT', max - #out, 'STREAMS', q, '>')
    if not got or #got[1][2] == 0 then break end
    for _, entry in ipairs(got[1][2]) do
      local sid, n = entry[1], entry[2][2]
      local k = dkey(n)
      local h = redis.call('HMGET', k, 'st', 'bl', 'sid', 'e', 'tk', 'src')
      if h[1] == '0' and h[2] ~= '1' and h[3] == sid then
        local attempt = S(redis.call('HINCRBY', k, 'at', 1))
        redis.call('HSET', k, 'st', '1', 'ls', deadline, 'up', now, 's' .. attempt, now)
        redis.call('ZADD', 'sb:leases', deadline, n)
        gauge(h[5], h[6], app, 'p', -1)
        gauge(h[5], h[6], app, 'i', 1)
        out[#out + 1] = { n, attempt, h[4] }
      else
        -- Not ready any more (defensive: every state change takes its entry off).
        redis.call('XACK', q, G, sid)
        redis.call('XDEL', q, sid)
      end
    end
  end
end
local next_ready = ''
if #out == 0 then
  local first = redis.call('ZRANGE', rkey, 0, 0, 'WITHSCORES')
  if first[2] then next_ready = first[2] end
end
return { out, next_ready }

-- publish: stores a batch of events and their deliveries, all in this one script.
-- ARGV: now, count, then per event: idempotency key ('' or its full key), event id, tenant,
-- tenant key, source, type, nfields, nfields field/value pairs of the event hash, ntargets,
-- then per target: app, order set key ('' when unordered).
-- Then, optionally, an alert change made with the batch: 'set'|'del', field, JSON. An alert
-- change another node already made (raise a raised one, clear a cleared one) stores
-- nothing: the batch comes back as a duplicate without deliveries, so each change is
-- announced once however many nodes notice it.
-- Returns per event: {event id, duplicate 0|1, {{n, target, status}...}}.
local now = ARGV[1]
local count = tonumber(ARGV[2])
local i = 3
local function take()
  i = i + 1
  return ARGV[i - 1]
end
local events = {}
for e = 1, count do
  local ev = { take(), take(), take(), take(), take(), take(), {}, {} }
  for f = 1, tonumber(take()) * 2 do ev[7][f] = take() end
  for t = 1, tonumber(take()) do ev[8][t] = { take(), take() } end
  events[e] = ev
end
local op = ARGV[i]
if (op == 'set' and redis.call('HEXISTS', 'sb:alerts', ARGV[i + 1]) == 1)
    or (op == 'del' and redis.call('HEXISTS', 'sb:alerts', ARGV[i + 1]) == 0) then
  local out = {}
  for e, ev in ipairs(events) do out[e] = { ev[2], 1, {} } end
  return out
end
local out = {}
for _, ev in ipairs(events) do
  local idem, id, tn, tk, src, ty, fields, targets =
    ev[1], ev[2], ev[3], ev[4], ev[5], ev[6], ev[7], ev[8]
  local first = false
  if idem ~= '' then first = redis.call('GET', idem) end
  if first then
    local ds = {}
    local dl = redis.call('HGET', 'sb:e:' .. first, 'dl') or ''
    for n in string.gmatch(dl, '[^,]+') do
      local h = redis.call('HMGET', dkey(n), 't', 'st')
      ds[#ds + 1] = { n, h[1] or '', h[2] or '0' }
    end
    out[#out + 1] = { first, 1, ds }
  else
    if idem ~= '' then redis.call('SET', idem, id) end
    local seq = S(redis.call('INCR', 'sb:seq:e'))
    local dl, ds = {}, {}
    for _, t in ipairs(targets) do
      local app, okey = t[1], t[2]
      local n = S(redis.call('INCR', 'sb:seq:d'))
      local d = { 'e', id, 't', app, 'tn', tn, 'tk', tk, 'src', src, 'ty', ty, 'st', '0',
                  'at', '0', 'bb', '0', 'av', now, 'cr', now, 'up', now }
      local blocked = '0'
      if okey ~= '' then
        if redis.call('ZCARD', okey) > 0 then blocked = '1' end
        redis.call('ZADD', okey, n, n)
        d[#d + 1] = 'ok'
        d[#d + 1] = okey
      end
      d[#d + 1] = 'bl'
      d[#d + 1] = blocked
      redis.call('HSET', dkey(n), unpack(d))
      if blocked == '0' then
        enqueue(app, n)
        wake(app)
      end
      redis.call('ZADD', open_key(tk), n, n)
      channel(tk, src, app)
      gauge(tk, src, app, 'p', 1)
      gauge(tk, src, app, 'P', 1)
      flow(tk, src, app, now, 'p', 1)
      opened(tk, src, app, n, now)
      redis.call('ZADD', 'sb:ix:t:' .. app, seq, id)
      redis.call('ZADD', 'sb:ix:v:' .. app, seq, id)
      dl[#dl + 1] = n
      ds[#ds + 1] = { n, app, '0' }
    end
    redis.call('HSET', 'sb:e:' .. id, 'seq', seq, 'dl', table.concat(dl, ','), unpack(fields))
    redis.call('ZADD', 'sb:ix', seq, id)
    redis.call('ZADD', 'sb:{' .. tk .. '}:ix', seq, id)
    local tm = now
    for f = 1, #fields, 2 do
      if fields[f] == 'tm' then tm = fields[f + 1] end
    end
    redis.call('ZADD', 'sb:ixt', tm, id)
    redis.call('ZADD', 'sb:{' .. tk .. '}:ixt', tm, id)
    redis.call('ZADD', 'sb:ix:s:' .. src, seq, id)
    redis.call('ZADD', 'sb:ix:v:' .. src, seq, id)
    out[#out + 1] = { id, 0, ds }
  end
end
if op == 'set' then
  redis.call('HSET', 'sb:alerts', ARGV[i + 1], ARGV[i + 2])
elseif op == 'del' then
  redis.call('HDEL', 'sb:alerts', ARGV[i + 1])
end
send_wakes()
return out

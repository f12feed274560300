-- Shared by every switchboard script (prepended to each). Only the caller's `now` is a
-- clock; keys are built here from the ids the caller passes. Numbers go to Redis as
-- strings (tostring is exact below 1e14, far above any timestamp or counter here).
local G = 'switchboard' -- the consumer group (and its one consumer) on every app stream
local S = tostring

local function dkey(n) return 'sb:d:' .. n end
local function qkey(app) return 'sb:q:' .. app end
local function open_key(tk) return 'sb:{' .. tk .. '}:open' end

-- Appends delivery n to the stream of `app` (its ready queue), creating stream and group
-- on first use, and remembers the entry id.
local function enqueue(app, n)
  local q = qkey(app)
  if redis.call('EXISTS', q) == 0 then
    redis.call('XGROUP', 'CREATE', q, G, '0', 'MKSTREAM')
  end
  local sid = redis.call('XADD', q, '*', 'd', n)
  redis.call('HSET', dkey(n), 'sid', sid)
end

-- Takes delivery n's entry off the stream of `app`: out of the PEL, then deleted.
local function unqueue(app, n)
  local sid = redis.call('HGET', dkey(n), 'sid')
  if sid then
    local q = qkey(app)
    redis.call('XACK', q, G, sid)
    redis.call('XDEL', q, sid)
    redis.call('HDEL', dkey(n), 'sid')
  end
end

-- Apps whose consumers should look again, told once per script through pub/sub.
local woken = {}
local function wake(app) woken[app] = true end
local function send_wakes()
  for app, _ in pairs(woken) do
    redis.call('PUBLISH', 'sb:wake', app)
  end
end

-- The dead-letter indexes of a delivery (all, tenant, target, visible to target and source).
local function dead_keys(tk, target, source)
  return { 'sb:dead', 'sb:{' .. tk .. '}:dead', 'sb:dead:t:' .. target,
           'sb:dead:v:' .. target, 'sb:dead:v:' .. source }
end

-- After ordered delivery n finished (acknowledged or dead), unblocks the next open one of
-- its entity (lowest delivery number, i.e. publish order), if it waits.
local function finished(n, okey, app, now)
  if not okey then return end
  redis.call('ZREM', okey, n)
  local first = redis.call('ZRANGE', okey, 0, 0)[1]
  if not first then return end
  local k = dkey(first)
  if redis.call('HGET', k, 'bl') ~= '1' then return end
  local av = redis.call('HGET', k, 'av')
  if tonumber(av) < tonumber(now) then av = now end
  redis.call('HSET', k, 'bl', '0', 'av', av, 'up', now)
  enqueue(app, first)
  wake(app)
end

-- Transparency counters, changed by the same script as the deliveries they count.
-- A channel is (tenant, source, target); its keys carry the tenant tag.
local function ch_key(tk, src, tgt, kind)
  return 'sb:{' .. tk .. '}:' .. kind .. ':' .. src .. ':' .. tgt
end

-- Registers a channel in the lists `channels` and `prune_stats` read.
local function channel(tk, src, tgt)
  redis.call('SADD', 'sb:channels', tk .. ' ' .. src .. ' ' .. tgt)
  redis.call('SADD', 'sb:{' .. tk .. '}:channels', src .. ' ' .. tgt)
end

-- Moves a gauge of a channel (pending 'p', in flight 'i', failing 'f', dead 'd', all-time
-- published 'P' and acknowledged 'A'); pending and in flight also per target app.
local function gauge(tk, src, tgt, field, by)
  if by == 0 then return end
  redis.call('HINCRBY', ch_key(tk, src, tgt, 'g'), field, S(by))
  if field == 'p' or field == 'i' then
    redis.call('HINCRBY', 'sb:load', tgt .. ':' .. field, S(by))
  end
end

-- Counts a flow (published 'p', acknowledged 'a', failed attempts 'f', deaths 'x', latency
-- sum 'ls', latency histogram bucket 'b<k>') in the minute and the hour of `now`.
local function flow(tk, src, tgt, now, field, by)
  local t = tonumber(now)
  redis.call('HINCRBY', ch_key(tk, src, tgt, 'm'), S(t - t % 60000) .. ':' .. field, S(by))
  redis.call('HINCRBY', ch_key(tk, src, tgt, 'h'), S(t - t % 3600000) .. ':' .. field, S(by))
end

-- The channel's open deliveries by creation time (its oldest open one).
local function opened(tk, src, tgt, n, created)
  redis.call('ZADD', ch_key(tk, src, tgt, 'oo'), created, n)
end
local function closed(tk, src, tgt, n)
  redis.call('ZREM', ch_key(tk, src, tgt, 'oo'), n)
end

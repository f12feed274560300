-- query: one page of events, dead deliveries or open deliveries, read from the smallest of
-- the candidate indexes (sorted sets scored by event seq or delivery number) and filtered
-- here on the hashes, so a page costs the entries looked at, never the whole data set.
-- Looks at no more than `budget` entries: a page may then come back short, with a cursor
-- to go on from.
-- ARGV: mode ('events'|'dead'|'unacked'), dir ('asc'|'desc'), after ('' or a score),
--   limit, budget, ncandidates, candidate keys..., then filter name/value pairs.
-- Returns {members, next cursor ('' when done)}.
local mode, dir, after = ARGV[1], ARGV[2], ARGV[3]
local limit, budget, ncand = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local key, smallest = nil, nil
for j = 1, ncand do
  local c = ARGV[6 + j]
  local size = redis.call('ZCARD', c)
  if not smallest or size < smallest then key, smallest = c, size end
end
local f = {}
for j = 7 + ncand, #ARGV, 2 do f[ARGV[j]] = ARGV[j + 1] end

local function type_ok(ty)
  if f.type_exact and ty ~= f.type_exact then return false end
  if f.type_prefix and string.sub(ty, 1, #f.type_prefix) ~= f.type_prefix then return false end
  return true
end
local function time_ok(t)
  t = tonumber(t)
  if f.since and t < tonumber(f.since) then return false end
  if f.before and t >= tonumber(f.before) then return false end
  return true
end

local keep
if mode == 'events' then
  keep = function(id)
    local e = redis.call('HMGET', 'sb:e:' .. id, 'tn', 'ty', 'src', 'tm', 'dl')
    if not e[1] then return false end
    if f.tenant and e[1] ~= f.tenant then return false end
    if not type_ok(e[2]) then return false end
    if f.source and e[3] ~= f.source then return false end
    if not time_ok(e[4]) then return false end
    local need_delivery = f.target or f.status
    local visible = not f.visible or e[3] == f.visible
    if need_delivery or not visible then
      local found = not need_delivery
      for n in string.gmatch(e[5] or '', '[^,]+') do
        local d = redis.call('HMGET', dkey(n), 't', 'st')
        if (not f.target or d[1] == f.target) and (not f.status or d[2] == f.status) then
          found = true
        end
        if d[1] == f.visible then visible = true end
      end
      if not found or not visible then return false end
    end
    return true
  end
elseif mode == 'dead' then
  keep = function(n)
    local d = redis.call('HMGET', dkey(n), 'st', 'tn', 't', 'ty', 'up', 'src')
    if d[1] ~= '3' then return false end
    if f.tenant and d[2] ~= f.tenant then return false end
    if f.target and d[3] ~= f.target then return false end
    if not type_ok(d[4]) or not time_ok(d[5]) then return false end
    if f.visible and d[3] ~= f.visible and d[6] ~= f.visible then return false end
    if f.owner and d[3] ~= f.owner then return false end
    return true
  end
else
  keep = function(n)
    local d = redis.call('HMGET', dkey(n), 'st', 'cr', 't', 'src')
    if d[1] ~= '0' and d[1] ~= '1' then return false end
    if tonumber(d[2]) > tonumber(f.created_before) then return false end
    if f.visible and d[3] ~= f.visible and d[4] ~= f.visible then return false end
    return true
  end
end

local kept, seen, cursor, kept_cursor = {}, 0, after, ''
while true do
  local page
  if dir == 'desc' then
    local top = (cursor == '') and '+inf' or ('(' .. cursor)
    page = redis.call('ZREVRANGEBYSCORE', key, top, '-inf', 'WITHSCORES', 'LIMIT', 0, 256)
  else
    local bottom = (cursor == '') and '-inf' or ('(' .. cursor)
    page = redis.call('ZRANGEBYSCORE', key, bottom, '+inf', 'WITHSCORES', 'LIMIT', 0, 256)
  end
  if #page == 0 then return { kept, '' } end
  for j = 1, #page, 2 do
    seen = seen + 1
    cursor = page[j + 1]
    if keep(page[j]) then
      if #kept == limit then
        -- One more than the page holds: there is a next page, after the last kept one.
        return { kept, kept_cursor }
      end
      kept[#kept + 1] = page[j]
      kept_cursor = cursor
    end
    if seen >= budget then return { kept, cursor } end
  end
end

-- stats_by_type: events whose time is in [since, until) (from a time index), grouped by
-- type, with their deliveries' outcomes so far. Costs the events in the range.
-- ARGV: time index key, since, until, visible app ('' for all).
-- Returns {{type, deliveries, acknowledged, failed attempts, dead}...}.
local key, since, before, visible = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rows, order = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, since, '(' .. before)) do
  local e = redis.call('HMGET', 'sb:e:' .. id, 'ty', 'dl')
  if e[1] then
    for n in string.gmatch(e[2] or '', '[^,]+') do
      local d = redis.call('HMGET', dkey(n), 'st', 'fa', 't', 'src')
      if visible == '' or d[3] == visible or d[4] == visible then
        local r = rows[e[1]]
        if not r then
          r = { e[1], 0, 0, 0, 0 }
          rows[e[1]] = r
          order[#order + 1] = e[1]
        end
        r[2] = r[2] + 1
        if d[1] == '2' then r[3] = r[3] + 1 end
        r[4] = r[4] + tonumber(d[2] or '0')
        if d[1] == '3' then r[5] = r[5] + 1 end
      end
    end
  end
end
local out = {}
for _, ty in ipairs(order) do out[#out + 1] = rows[ty] end
return out

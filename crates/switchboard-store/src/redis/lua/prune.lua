-- prune: drops the minute buckets of one channel older than one time and its hour buckets
-- older than another. ARGV: minute hash key, hour hash key, minutes before, hours before.
-- Returns how many buckets went.
local removed = 0
for _, p in ipairs({ { ARGV[1], tonumber(ARGV[3]) }, { ARGV[2], tonumber(ARGV[4]) } }) do
  local starts = {}
  for _, f in ipairs(redis.call('HKEYS', p[1])) do
    local start = tonumber(string.match(f, '^(%-?%d+):'))
    if start and start < p[2] then
      redis.call('HDEL', p[1], f)
      starts[start] = true
    end
  end
  for _ in pairs(starts) do removed = removed + 1 end
end
return removed

-- touch_keys: records when keys were last used, never moving a time backwards and skipping
-- keys that are gone. ARGV: key id, time (ms), key id, time...
for i = 1, #ARGV, 2 do
  local k = 'sb:key:' .. ARGV[i]
  if redis.call('EXISTS', k) == 1 then
    local t = tonumber(ARGV[i + 1])
    if t > (tonumber(redis.call('HGET', k, 'u')) or 0) then
      redis.call('HSET', k, 'u', ARGV[i + 1])
    end
  end
end
return 0

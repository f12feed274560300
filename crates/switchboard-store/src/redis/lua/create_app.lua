-- create_app: registers an app and its first key unless the id is taken.
-- ARGV: app id, app JSON, key hash (hex), key id, now (ms). Returns 1, or 0 when the id is taken.
if redis.call('HEXISTS', 'sb:apps', ARGV[1]) == 1 then return 0 end
redis.call('HSET', 'sb:apps', ARGV[1], ARGV[2])
redis.call('HSET', 'sb:keys', ARGV[3], ARGV[4])
redis.call('HSET', 'sb:key:' .. ARGV[4], 'o', 'app:' .. ARGV[1], 'h', ARGV[3], 'c', ARGV[5])
redis.call('SADD', 'sb:ko:app:' .. ARGV[1], ARGV[4])
redis.call('PUBLISH', 'sb:wake', 'switchboard') -- apps changed: other nodes reload them
return 1

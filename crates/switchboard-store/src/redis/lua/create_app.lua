-- create_app: registers an app and its first key unless the id is taken.
-- ARGV: app id, app JSON, key hash (hex), key id. Returns 1, or 0 when the id is taken.
if redis.call('HEXISTS', 'sb:apps', ARGV[1]) == 1 then return 0 end
redis.call('HSET', 'sb:apps', ARGV[1], ARGV[2])
redis.call('HSET', 'sb:keys', ARGV[3], ARGV[1])
redis.call('HSET', 'sb:key_ids', ARGV[4], ARGV[3])
redis.call('PUBLISH', 'sb:wake', 'switchboard') -- apps changed: other nodes reload them
return 1

-- update_app: replaces an app's JSON if it is still what the caller read.
-- ARGV: app id, JSON read, new JSON. Returns 1, or 0 when it changed meanwhile.
if redis.call('HGET', 'sb:apps', ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', 'sb:apps', ARGV[1], ARGV[3])
redis.call('PUBLISH', 'sb:wake', 'switchboard') -- apps changed: other nodes reload them
return 1

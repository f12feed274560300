-- revoke_key: drops a live key of an owner at once and tells every node (`switchboard` on the
-- wake-up channel) to forget the keys it cached.
-- ARGV: key id, owner, the owner's key set. Returns 1, or 0 when the owner has no such key.
local k = 'sb:key:' .. ARGV[1]
if redis.call('HGET', k, 'o') ~= ARGV[2] then return 0 end
redis.call('HDEL', 'sb:keys', redis.call('HGET', k, 'h'))
redis.call('DEL', k)
redis.call('SREM', ARGV[3], ARGV[1])
redis.call('PUBLISH', 'sb:wake', 'switchboard')
return 1

-- extend: moves the lease deadline of a delivery still in flight on the attempt read.
-- ARGV: n, attempt read, new deadline, now. Returns 'ok' or 'changed'.
local n, at, deadline, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = dkey(n)
local h = redis.call('HMGET', k, 'st', 'at')
if h[1] ~= '1' or h[2] ~= at then return 'changed' end
redis.call('HSET', k, 'ls', deadline, 'up', now)
redis.call('ZADD', 'sb:leases', deadline, n)
return 'ok'

-- add_key: a new live key for an owner (an app's next key, or a tenant reader's).
-- ARGV: owner (`app:<id>` or `tenant:<tenant>`), the owner's key set, key id, key hash (hex),
-- now (ms), app id ('' for a tenant reader). Returns 1, or 0 when the app is not registered.
if ARGV[6] ~= '' and redis.call('HEXISTS', 'sb:apps', ARGV[6]) == 0 then return 0 end
redis.call('HSET', 'sb:keys', ARGV[4], ARGV[3])
redis.call('HSET', 'sb:key:' .. ARGV[3], 'o', ARGV[1], 'h', ARGV[4], 'c', ARGV[5])
redis.call('SADD', ARGV[2], ARGV[3])
return 1

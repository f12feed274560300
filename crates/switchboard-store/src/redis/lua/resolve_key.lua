-- resolve_key: the id and owner of the live key with a hash.
-- ARGV: key hash (hex). Returns {key id, owner}, or an empty list.
local id = redis.call('HGET', 'sb:keys', ARGV[1])
if not id then return {} end
local owner = redis.call('HGET', 'sb:key:' .. id, 'o')
if not owner then return {} end
return {id, owner}

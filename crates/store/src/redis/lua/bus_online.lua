-- online(presence, instance liveness prefix) ARGV: device, liveness key prefix.
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return 0 end
local instance = string.match(owner, '^(%S+) ')
if not instance then return 0 end
return redis.call('EXISTS', ARGV[2] .. instance)

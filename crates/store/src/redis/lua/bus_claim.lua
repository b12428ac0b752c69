-- bus claim: KEYS[1] = the user's presence hash;
-- ARGV = device, owner ("<instance> <conn>"), channel prefix, my instance, user.
-- Records the new owner of (user, device) and tells the previous owner's instance to close its
-- session. Atomic, so of two racing claims exactly the later one wins and kicks the other.
-- (Not `claim.lua`: that name is the store's `claim_pending`.)
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if previous and previous ~= ARGV[2] then
  local instance, conn = string.match(previous, '^(%S+) (%d+)$')
  if instance and instance ~= ARGV[4] then
    local kick = cjson.encode({e = 'kick', user = ARGV[5], device = ARGV[1], conn = tonumber(conn)})
    redis.call('PUBLISH', ARGV[3] .. instance, kick)
  end
end
return 1

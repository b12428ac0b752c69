-- bus reclaim: KEYS[1] = the user's presence hash; ARGV = device, owner ("<instance> <conn>").
-- After the bus missed events: re-records the claim if the device has none (Redis lost it) and
-- returns 1; returns 1 if it is still ours; returns 0, changing nothing, if another session
-- holds the device (a newer one: the caller closes its own session, whose kick may be lost).
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
if current == ARGV[2] then
  return 1
end
return 0

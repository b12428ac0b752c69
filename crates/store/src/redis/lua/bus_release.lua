-- release(presence) ARGV: device, owner. Removes the claim only if it is still ours.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1

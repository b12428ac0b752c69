-- push_bind (Redis Cluster step): KEYS[1] = the user's push hash; ARGV = device, binding.
-- Binds the device and returns its previous binding (false when it had none).
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return previous

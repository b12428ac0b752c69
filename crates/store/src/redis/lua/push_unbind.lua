-- push_unbind (Redis Cluster step): KEYS[1] = a user's push hash.
-- ARGV = device, platform, token, registered-before ms ("" for none).
-- Removes the device's binding only if it is this (platform, token) and, with a cutoff, was
-- registered before it. Returns 1 when removed, 0 otherwise.
local binding = redis.call('HGET', KEYS[1], ARGV[1])
if not binding then
  return 0
end
local p, ms, t = string.match(binding, '^(%S+) (%S+) (%S+)$')
if p ~= ARGV[2] or t ~= ARGV[3] then
  return 0
end
if ARGV[4] ~= '' and tonumber(ms) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1

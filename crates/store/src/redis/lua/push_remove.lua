-- remove_push: KEYS[1] = the user's push hash, KEYS[2] = the token's owner key.
-- ARGV = device, platform, token, registered-before ms ("" for none), owner value.
-- Removes the device's binding only if it is this (platform, token) and, with a cutoff, was
-- registered before it. Returns 1 when removed, 0 otherwise.
local hash, owner_key = KEYS[1], KEYS[2]
local device, platform, token, before, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

local binding = redis.call('HGET', hash, device)
if not binding then
  return 0
end
local p, ms, t = string.match(binding, '^(%S+) (%S+) (%S+)$')
if p ~= platform or t ~= token then
  return 0
end
if before ~= '' and tonumber(ms) >= tonumber(before) then
  return 0
end
redis.call('HDEL', hash, device)
if redis.call('GET', owner_key) == owner then
  redis.call('DEL', owner_key)
end
return 1

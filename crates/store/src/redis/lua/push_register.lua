-- register_push: KEYS[1] = the user's push hash, KEYS[2] = the new token's owner key.
-- ARGV = device, binding ("<platform> <ms> <token>"), owner value ("<push hash>\n<device>"),
-- owner key prefix ("<prefix>:pushtoken:").
-- Also touches keys it can only learn from stored values: the device's previous token's owner
-- key and the previous holder's push hash. That is fine on one Redis primary; on a Redis
-- Cluster the backend runs single-slot steps instead (see redis/push_tokens.rs).
local hash, owner_key = KEYS[1], KEYS[2]
local device, binding, owner, owner_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function owner_key_of(b)
  local platform, _, token = string.match(b, '^(%S+) (%S+) (%S+)$')
  if not platform then
    return nil
  end
  return owner_prefix .. platform .. ':' .. token
end

-- The device's previous token no longer points here.
local previous = redis.call('HGET', hash, device)
if previous then
  local old_key = owner_key_of(previous)
  if old_key and old_key ~= owner_key and redis.call('GET', old_key) == owner then
    redis.call('DEL', old_key)
  end
end

-- The token's previous holder loses it (if it still holds this very token).
local holder = redis.call('GET', owner_key)
if holder and holder ~= owner then
  local sep = string.find(holder, '\n', 1, true)
  if sep then
    local holder_hash, holder_device = string.sub(holder, 1, sep - 1), string.sub(holder, sep + 1)
    local held = redis.call('HGET', holder_hash, holder_device)
    if held and owner_key_of(held) == owner_key then
      redis.call('HDEL', holder_hash, holder_device)
    end
  end
end

redis.call('HSET', hash, device, binding)
redis.call('SET', owner_key, owner)
return 1

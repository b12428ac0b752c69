-- wake(presence of each user) ARGV: channel prefix, my instance, then one wake message per key.
-- Publishes each user's wake message once to every other instance holding one of its devices.
for i, key in ipairs(KEYS) do
  local seen = {}
  for _, owner in ipairs(redis.call('HVALS', key)) do
    local instance = string.match(owner, '^(%S+) ')
    if instance and instance ~= ARGV[2] and not seen[instance] then
      seen[instance] = true
      redis.call('PUBLISH', ARGV[1] .. instance, ARGV[2 + i])
    end
  end
end
return 1

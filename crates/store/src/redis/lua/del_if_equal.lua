-- del_if_equal: KEYS[1] = a key; ARGV[1] = the value it must hold. Deletes it only then, so a
-- newer owner's value is never removed. Returns 1 when deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

-- trim: KEYS[1] = the inbox registry, KEYS[1 + i] = inbox stream i;
-- ARGV[1] = the first stream id to keep ('<cutoff ms>-0'), ARGV[2] = the last possible stream id
-- before it, ARGV[2 + i] = the user of inbox i (its registry member).
-- Drops the entries older than the cutoff and their pending entries in every group, and updates
-- the registry. Returns how many entries were dropped.
local keep_from, stale_until = ARGV[1], ARGV[2]
local page = 1000
local dropped = 0
for i = 2, #KEYS do
  local key, member = KEYS[i], ARGV[i + 1]
  if redis.call('EXISTS', key) == 1 then
    dropped = dropped + redis.call('XTRIM', key, 'MINID', keep_from)
    -- Ack the pending entries of dropped messages, so depth only counts messages that exist.
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name
      for f = 1, #group, 2 do
        if group[f] == 'name' then
          name = group[f + 1]
        end
      end
      repeat
        local stale = redis.call('XPENDING', key, name, '-', stale_until, page)
        local ids = {}
        for _, entry in ipairs(stale) do
          ids[#ids + 1] = entry[1]
        end
        if #ids > 0 then
          redis.call('XACK', key, name, unpack(ids))
        end
      until #stale < page
    end
    local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    if #head == 0 then
      redis.call('ZREM', KEYS[1], member)
    else
      redis.call('ZADD', KEYS[1], 'XX', string.match(head[1][1], '^%d+'), member)
    end
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return dropped

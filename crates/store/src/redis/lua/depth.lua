-- Shared by append.lua and depth.lua (prepended to both): an inbox's depth, i.e. the unread
-- plus pending messages of its slowest consumer group (device), or all its entries while it
-- has no group. `cap` bounds the fallback count used when Redis cannot tell a group's lag.
-- The depth never exceeds the stream's length: a group's unread entries (after its cursor) and
-- its pending ones (at or before it) are distinct entries, and trim.lua acks the pending
-- entries of what it drops; append.lua therefore asks for the depth only when the length alone
-- leaves no room under max_pending.
local function inbox_depth(key, cap)
  local len = redis.call('XLEN', key)
  if len == 0 and redis.call('EXISTS', key) == 0 then
    return 0
  end
  local groups = redis.call('XINFO', 'GROUPS', key)
  if #groups == 0 then
    return len
  end
  local worst = 0
  for _, group in ipairs(groups) do
    local info = {}
    for i = 1, #group, 2 do
      info[group[i]] = group[i + 1]
    end
    -- `lag` (Redis >= 7.0) is nil when Redis cannot compute it, and absent before 7.0:
    -- count the entries after the group's cursor instead, up to `cap`.
    local unread = info['lag']
    if not unread then
      unread = #redis.call('XRANGE', key, '(' .. info['last-delivered-id'], '+', 'COUNT', cap)
    end
    -- `lag` still counts entries trimmed before the group read them; never more than exist.
    if unread > len then
      unread = len
    end
    local depth = unread + info['pending']
    if depth > worst then
      worst = depth
    end
  end
  return worst
end

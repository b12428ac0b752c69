-- Shared by read.lua and append.lua (prepended to both): a device's read of new entries, its
-- group created at the start of the stream on first use (so a new device catches up on every
-- retained message).

-- Creates `group` at the start of stream `key` unless it exists; returns the error, if any.
local function create_group(key, group)
  local created = redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
  if type(created) == 'table' and created.err and not string.find(created.err, '^BUSYGROUP') then
    return created
  end
  return nil
end

-- Up to `count` new entries of `key` for `group` (false when there are none), or an error.
local function read_group(key, group, consumer, count)
  if count == 0 then
    -- COUNT 0 would mean "no limit" to Redis: only make sure the group exists.
    return create_group(key, group) or false
  end
  local reply = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>')
  if type(reply) == 'table' and reply.err and string.find(reply.err, '^NOGROUP') then
    local failed = create_group(key, group)
    if failed then
      return failed
    end
    reply = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>')
  end
  return reply
end

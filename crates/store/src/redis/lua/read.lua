-- read_new for a device without a group (the store calls XREADGROUP itself otherwise):
-- KEYS[1] = inbox stream; ARGV = group (device), consumer, count.
-- Creates the device's group at the start of the stream on first use (so a new device catches
-- up on every retained message), then reads new entries. Returns {id1, json1, id2, json2, ...}.
local key, group, consumer, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])

local function create_group()
  local created = redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
  if type(created) == 'table' and created.err and not string.find(created.err, '^BUSYGROUP') then
    return created
  end
  return nil
end

if count == 0 then
  -- COUNT 0 would mean "no limit" to Redis: only register the device.
  local failed = create_group()
  if failed then
    return failed
  end
  return {}
end

local function read()
  return redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, '>')
end

local reply = read()
if type(reply) == 'table' and reply.err then
  if not string.find(reply.err, '^NOGROUP') then
    return reply
  end
  local failed = create_group()
  if failed then
    return failed
  end
  reply = read()
  if type(reply) == 'table' and reply.err then
    return reply
  end
end

if not reply then
  return {}
end
return entries_reply(reply[1][2])

-- read_new for a device without a group (the store calls XREADGROUP itself otherwise):
-- KEYS[1] = inbox stream; ARGV = group (device), consumer, count.
-- Creates the device's group at the start of the stream on first use (so a new device catches
-- up on every retained message), then reads new entries. Returns {id1, json1, id2, json2, ...}.
local key, group, consumer, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])

local reply = read_group(key, group, consumer, count)
if type(reply) == 'table' and reply.err then
  return reply
end
if not reply then
  return {}
end
return entries_reply(reply[1][2])

-- append: stores batches of messages in one atomic script, each batch all or nothing on its own.
-- A batch is one msg.send; the batches of one call are the requests of one sender that arrived
-- together, appended in order (a later batch sees what an earlier one stored).
--
-- KEYS[1]            the inbox registry (sorted set: user -> ms of its oldest retained entry)
-- KEYS[1 + i]        inbox stream i, for i = 1..R
-- KEYS[1 + R + c]    client-id key c, for c = 1..C
-- ARGV[1]            max_pending
-- ARGV[2]            retention in ms (TTL of the client-id keys)
-- ARGV[3]            R, the number of inboxes
-- ARGV[4]            B, the number of batches
-- ARGV[5]            '1' for a dry run: check client ids and max_pending, write nothing
-- ARGV[5 + i]        the user of inbox i (its registry member), for i = 1..R
-- then per batch: N, its number of messages, then per message 4 arguments: inbox index,
-- client-id key index (0 = none), message id, JSON
-- then, optionally (append_and_read), the reads that follow the appends: ARGV[at] = M, the
-- number of reads, ARGV[at + 1] the consumer name, then per read 2 arguments: the device (its
-- group) and the most entries to read; read j reads KEYS[1 + R + C + j].
--
-- Returns, per batch in order: 'full', <inbox index> when an inbox would exceed max_pending
-- (nothing of that batch written); 'ok' after a dry run that found room; or 'ok' followed by,
-- per message, 's', <stream id> (stored) or 'd', <existing message id> (duplicate client id).
-- With reads, and only when some batch was stored ('ok'; not in a dry run), then per read: 'r',
-- <2 * entries>, then id, JSON for each entry read (entries.lua); or 'e', <the error's text>.
local max_pending = tonumber(ARGV[1])
local retention = ARGV[2]
local inboxes = tonumber(ARGV[3])
local batches = tonumber(ARGV[4])
local dry_run = ARGV[5] == '1'

local out = {}

-- Whether `adding` more entries fit in the inbox stream `key` under max_pending, and the
-- stream's length. The length bounds the depth (depth.lua), so the exact depth, which asks for
-- every group's state, is needed only when the length alone leaves no room.
local function room(key, adding)
  local len = redis.call('XLEN', key)
  local fits = len + adding <= max_pending
    or inbox_depth(key, max_pending + 1) + adding <= max_pending
  return fits, len
end

-- Appends the `count` messages whose arguments start at ARGV[first], adding its answer to `out`.
local function append_batch(first, count)
  local function arg(i, field)
    return ARGV[first + 4 * i + field]
  end

  -- Phase 1: decide every message's fate without writing anything.
  local existing = {}  -- message -> id of the message already sent with its client id, or false
  local claimed = {}   -- client-id key -> message id claiming it in this batch
  local adding = {}    -- inbox -> messages to store
  for i = 0, count - 1 do
    local cid = tonumber(arg(i, 1))
    local found = false
    if cid > 0 then
      found = claimed[cid] or redis.call('GET', KEYS[1 + inboxes + cid])
      if not found then
        claimed[cid] = arg(i, 2)
      end
    end
    existing[i] = found
    if not found then
      local inbox = tonumber(arg(i, 0))
      adding[inbox] = (adding[inbox] or 0) + 1
    end
  end

  -- Phase 2: max_pending, per inbox in order of its first stored message. An inbox that holds
  -- entries is in the registry already (an append registers it in the same script as its
  -- first entry; trim removes it only once its stream is empty), so phase 3 skips its ZADD.
  local checked = {}
  local registered = {}
  for i = 0, count - 1 do
    local inbox = tonumber(arg(i, 0))
    if not existing[i] and not checked[inbox] then
      checked[inbox] = true
      local fits, len = room(KEYS[1 + inbox], adding[inbox])
      registered[inbox] = len > 0
      if not fits then
        out[#out + 1] = 'full'
        out[#out + 1] = tostring(inbox)
        return
      end
    end
  end

  out[#out + 1] = 'ok'
  if dry_run then
    return
  end

  -- Phase 3: write. Redis assigns each inbox's first stream id (so an inbox's order is
  -- acceptance order); the batch's later messages to that inbox follow it in the same
  -- millisecond, so one batch has one acceptance time per inbox even when the clock ticks while
  -- the script runs.
  local previous = {}  -- inbox -> {ms, seq} of the batch's latest entry in it
  for i = 0, count - 1 do
    if existing[i] then
      out[#out + 1] = 'd'
      out[#out + 1] = existing[i]
    else
      local inbox = tonumber(arg(i, 0))
      local first_in_inbox = not previous[inbox]
      local id = '*'
      if not first_in_inbox then
        id = previous[inbox][1] .. '-' .. string.format('%d', previous[inbox][2] + 1)
      end
      id = redis.call('XADD', KEYS[1 + inbox], id, 'm', arg(i, 3))
      local ms, seq = string.match(id, '^(%d+)-(%d+)$')
      previous[inbox] = {ms, tonumber(seq)}
      local cid = tonumber(arg(i, 1))
      if cid > 0 then
        redis.call('SET', KEYS[1 + inboxes + cid], arg(i, 2), 'PX', retention, 'NX')
      end
      if first_in_inbox and not registered[inbox] then
        redis.call('ZADD', KEYS[1], 'NX', ms, ARGV[5 + inbox])
      end
      out[#out + 1] = 's'
      out[#out + 1] = id
    end
  end
end

-- The common batch, one message without a client id, the same as `append_batch` does it
-- without its bookkeeping tables: in redis-server's Lua every table and closure counts (a
-- p2p sender's requests arrive one message per batch).
local function append_one(first)
  local inbox = tonumber(ARGV[first])
  local key = KEYS[1 + inbox]
  local fits, len = room(key, 1)
  if not fits then
    out[#out + 1] = 'full'
    out[#out + 1] = tostring(inbox)
    return
  end
  out[#out + 1] = 'ok'
  if dry_run then
    return
  end
  local id = redis.call('XADD', key, '*', 'm', ARGV[first + 3])
  if len == 0 then
    redis.call('ZADD', KEYS[1], 'NX', string.match(id, '^%d+'), ARGV[5 + inbox])
  end
  out[#out + 1] = 's'
  out[#out + 1] = id
end

local stored_any = false
local at = 6 + inboxes  -- ARGV index of the next batch's N
for _ = 1, batches do
  local count = tonumber(ARGV[at])
  local before = #out
  if count == 1 and ARGV[at + 2] == '0' then
    append_one(at + 1)
  else
    append_batch(at + 1, count)
  end
  stored_any = stored_any or out[before + 1] == 'ok'
  at = at + 1 + 4 * count
end

-- The reads of append_and_read, in the same call: no second round trip (nor a second fsync of
-- an `appendfsync always` server) between storing a message and handing it to a waiting
-- device. As read.lua does it (`read_group`): a device without a group gets one at the start of
-- the stream.
local reads = tonumber(ARGV[at] or '0')

if reads > 0 and stored_any and not dry_run then
  local consumer = ARGV[at + 1]
  local first_key = 1 + #KEYS - reads
  for j = 0, reads - 1 do
    local reply = read_group(KEYS[first_key + j], ARGV[at + 2 + 2 * j], consumer, tonumber(ARGV[at + 3 + 2 * j]))
    if type(reply) == 'table' and reply.err then
      out[#out + 1] = 'e'
      out[#out + 1] = reply.err
    else
      local entries = {}
      if reply then
        entries = entries_reply(reply[1][2])
      end
      out[#out + 1] = 'r'
      out[#out + 1] = tostring(#entries)
      for _, word in ipairs(entries) do
        out[#out + 1] = word
      end
    end
  end
end
return out

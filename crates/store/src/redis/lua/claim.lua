-- claim_pending: KEYS[1] = inbox stream;
-- ARGV = group (device), consumer, cutoff (ms since the epoch, or '' for any delivery time),
-- start ('-' or '(<id>' for "after <id>"), count.
-- Claims up to `count` pending entries after `start` last delivered before the cutoff, in
-- stream order, resetting their delivery time to now. Returns {id1, json1, id2, json2, ...}.
--
-- Why not XAUTOCLAIM: its min-idle-time is relative to the server's clock while the cutoff is
-- an absolute time, its start id is inclusive (paging with `after` needs exclusive), and it
-- stops after scanning COUNT * 10 entries, returning fewer than it could. XPENDING IDLE with an
-- exclusive start, then XCLAIM of exactly those ids, does what `claim_pending` says.
local key, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local cutoff, start, count = ARGV[3], ARGV[4], tonumber(ARGV[5])
if count <= 0 then
  return {}
end

-- "Delivered before the cutoff" = delivery < cutoff = idle > now - cutoff, in whole ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local min_idle = 0
if cutoff ~= '' then
  min_idle = math.max(0, now - tonumber(cutoff) + 1)
end

local pending = redis.pcall('XPENDING', key, group, 'IDLE', min_idle, start, '+', count)
if type(pending) == 'table' and pending.err then
  -- No stream or no group: the device has nothing pending.
  if string.find(pending.err, '^NOGROUP') then
    return {}
  end
  return pending
end
if #pending == 0 then
  return {}
end

local ids = {}
for i, entry in ipairs(pending) do
  ids[i] = entry[1]
end
-- The new delivery time is asked as `now` (TIME, the clock the cutoff is compared with), but
-- Redis clamps a delivery time later than the time it cached for the command down to that
-- cached time, which can lag the clock (it may be from before the event loop's last sleep).
-- Deliveries are therefore stamped up to that lag early; callers' cutoffs (now - ack_timeout)
-- are seconds away from it. The conformance checks keep STORE_CLOCK_LAG of room.
local claim = {key, group, consumer, 0}
for _, id in ipairs(ids) do
  claim[#claim + 1] = id
end
claim[#claim + 1] = 'TIME'
claim[#claim + 1] = now
local out = entries_reply(redis.call('XCLAIM', unpack(claim)))
local found = {}
for i = 1, #out, 2 do
  found[out[i]] = true
end
-- Pending entries of trimmed messages are dropped (7.0+ XCLAIM already removed them).
local gone = {}
for _, id in ipairs(ids) do
  if not found[id] then
    gone[#gone + 1] = id
  end
end
if #gone > 0 then
  redis.call('XACK', key, group, unpack(gone))
end
return out

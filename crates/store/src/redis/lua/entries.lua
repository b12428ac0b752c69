-- Shared by read.lua and claim.lua (prepended to both): stream entries as the flat reply the
-- store decodes, {id1, json1, id2, json2, ...}, taking each entry's `m` field. Entries without
-- fields are left out: Redis before 7.0 answers XCLAIM with nil (false in Lua) for a pending
-- entry whose message was trimmed.
local function entries_reply(entries)
  local out = {}
  for _, entry in ipairs(entries) do
    local fields = type(entry) == 'table' and entry[2]
    if fields then
      local json = ''
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then
          json = fields[i + 1]
        end
      end
      out[#out + 1] = entry[1]
      out[#out + 1] = json
    end
  end
  return out
end

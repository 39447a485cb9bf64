-- Remove keys from the listing index that are not live at this moment. Checked and removed in
-- one step, so a key written again in between is never dropped from the index.
-- KEYS[1] key index (zset), then the data hash of each candidate key
-- ARGV[1] now ms, then each candidate key's name (in the order of its data hash)
-- Returns how many were removed.
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'ver', 'del', 'exp')
  local ver, del, exp = cur[1], cur[2], cur[3]
  local e = tonumber(exp)
  local live = ver and del ~= '1' and (not e or e == 0 or e > now)
  if not live then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed

-- Remove sequence markers no write can get past any more: a tombstone (a deleted key) or an
-- expired key's leftover keeps an older write to its key (accepted before the delete or the
-- expiring write) from being applied after it; once every entry accepted before the queue's
-- low-water mark (its oldest pending or undelivered entry) is applied, it guards nothing.
-- Flagged allow-oom (lua.rs): it only frees memory.
-- KEYS[1] tombstone index (sorted set of data keys, scored by the ms of their delete's id, or of
--   their expiry for keys written with a TTL)
-- ARGV[1] the low-water mark's ms, ARGV[2] most index members to look at, ARGV[3] now ms
-- Returns how many index members it looked at.
local low = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local members = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, data in ipairs(members) do
  local cur = redis.call('HMGET', data, 'del', 'seq', 'exp')
  local seq_ms = cur[2] and tonumber(string.match(cur[2], '^(%d+)-'))
  local expired = cur[3] and tonumber(cur[3]) and tonumber(cur[3]) > 0 and tonumber(cur[3]) <= now
  -- a key written again since is no marker any more: only the index member goes
  if (cur[1] == '1' or expired) and seq_ms and seq_ms < low then
    redis.call('DEL', data)
  end
  redis.call('ZREM', KEYS[1], data)
end
return #members

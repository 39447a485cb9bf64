-- Remove tombstones no write can get past any more: a tombstone keeps an older write to its key
-- (accepted before the delete) from being applied after it; once every entry accepted before
-- the queue's low-water mark (its oldest pending or undelivered entry) is applied, it guards
-- nothing. Flagged allow-oom (lua.rs): it only frees memory.
-- KEYS[1] tombstone index (sorted set of data keys, scored by the ms of their delete's id)
-- ARGV[1] the low-water mark's ms, ARGV[2] most tombstones to look at
-- Returns how many index members it looked at.
local low = tonumber(ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], '-inf', '(' .. ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, data in ipairs(members) do
  local cur = redis.call('HMGET', data, 'del', 'seq')
  -- a key written again since is no tombstone any more: only the index member goes
  if cur[1] == '1' and cur[2] and tonumber(string.match(cur[2], '^(%d+)-')) < low then
    redis.call('DEL', data)
  end
  redis.call('ZREM', KEYS[1], data)
end
return #members

-- Remove sequence markers no write can get past any more: a tombstone (a deleted key) or an
-- expired key's leftover keeps an older write to its key (accepted before the delete or the
-- expiring write) from being applied after it; once every entry accepted before the queue's
-- low-water mark (its oldest pending or undelivered entry) is applied, it guards nothing.
-- Flagged allow-oom (lua.rs): it only frees memory.
-- KEYS[1] tombstone index (sorted set of data keys, scored by the ms of their delete's id, or of
--   their expiry for keys written with a TTL), KEYS[2..] the candidates: index members the caller
--   read with a score below the mark (declared, so that every key the script touches is)
-- ARGV[1] the low-water mark's ms, ARGV[2] now ms
-- Returns how many candidates it removed from the index.
local low = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local removed = 0
for i = 2, #KEYS do
  local data = KEYS[i]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], data))
  -- gone meanwhile, or marked again since the caller read it: not a candidate any more
  if score and score < low then
    local cur = redis.call('HMGET', data, 'del', 'seq', 'exp')
    local seq_ms = cur[2] and tonumber(string.match(cur[2], '^(%d+)-'))
    local expired = cur[3] and tonumber(cur[3]) and tonumber(cur[3]) > 0 and tonumber(cur[3]) <= now
    -- a key written again since is no marker any more: only the index member goes
    if (cur[1] == '1' or expired) and seq_ms and seq_ms < low then
      redis.call('DEL', data)
    end
    removed = removed + redis.call('ZREM', KEYS[1], data)
  end
end
return removed

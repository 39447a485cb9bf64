-- Apply one write task atomically and acknowledge it: the heart of the queue's guarantees.
-- An older write never overwrites a newer one (compared by stream id = acceptance order),
-- a redelivered task is a no-op, versions come from one counter so they only ever increase.
-- KEYS[1] data hash of the key, KEYS[2] task record, KEYS[3] key index (zset),
-- KEYS[4] version counter, KEYS[5] task stream
-- ARGV[1] stream id, ARGV[2] op, ARGV[3] key, ARGV[4] value, ARGV[5] ttl ms ('' none),
-- ARGV[6] If-Match ('' none), ARGV[7] If-None-Match ('1'/''), ARGV[8] now ms,
-- ARGV[9] tombstone ms, ARGV[10] consumer group, ARGV[11] notify channel ('' none), ARGV[12] task id,
-- ARGV[13] retention seconds
-- Returns {status, version or '', error or ''}
-- Counted first: Redis keeps it even if this script fails below, which is how poison tasks
-- reach max_attempts.
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
local done = redis.call('HMGET', KEYS[2], 'status', 'version', 'error')
if not done[1] then
  -- The record outlived its retention and was just recreated: give it one again.
  redis.call('EXPIRE', KEYS[2], ARGV[13])
end
if done[1] and done[1] ~= 'queued' then
  -- Redelivery of a finished task: report what happened the first time.
  redis.call('XACK', KEYS[5], ARGV[10], ARGV[1])
  return {done[1], done[2] or '', done[3] or ''}
end

local function id_parts(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
-- true when stream id a is at or after stream id b
local function not_before(a, b)
  local ams, an = id_parts(a)
  local bms, bn = id_parts(b)
  return ams > bms or (ams == bms and an >= bn)
end

local now = tonumber(ARGV[8])
local cur = redis.call('HMGET', KEYS[1], 'seq', 'ver', 'del', 'exp')
local seq, ver, del, exp = cur[1], cur[2], cur[3], cur[4]
local status, version, err = 'applied', '', ''

if seq and not_before(seq, ARGV[1]) then
  if seq == ARGV[1] then
    version = ver or ''
  else
    status = 'superseded'
    err = 'a newer write to this key was applied first'
  end
else
  local live = seq and del ~= '1' and (not exp or exp == '0' or tonumber(exp) > now)
  if ARGV[7] == '1' and live then
    status, err = 'rejected', 'If-None-Match: the key exists'
  elseif ARGV[6] ~= '' and (not live or ver ~= ARGV[6]) then
    status, err = 'rejected', 'If-Match: the key is not at version ' .. ARGV[6]
  else
    version = tostring(redis.call('INCR', KEYS[4]))
    if ARGV[2] == 'set' then
      if ARGV[5] ~= '' then
        local expires = now + tonumber(ARGV[5])
        redis.call('HSET', KEYS[1], 'v', ARGV[4], 'ver', version, 'seq', ARGV[1], 'del', '0', 'exp', expires)
        -- keep the sequence past expiry so a late redelivery cannot resurrect the value
        redis.call('PEXPIREAT', KEYS[1], expires + tonumber(ARGV[9]))
      else
        redis.call('HSET', KEYS[1], 'v', ARGV[4], 'ver', version, 'seq', ARGV[1], 'del', '0')
        if exp or del == '1' then
          -- a TTL or a tombstone's expiry from before must not remove the new value
          redis.call('HDEL', KEYS[1], 'exp')
          redis.call('PERSIST', KEYS[1])
        end
      end
      if not live then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
    else
      redis.call('HDEL', KEYS[1], 'v', 'exp')
      redis.call('HSET', KEYS[1], 'ver', version, 'seq', ARGV[1], 'del', '1')
      redis.call('PEXPIRE', KEYS[1], ARGV[9])
      redis.call('ZREM', KEYS[3], ARGV[3])
    end
  end
end

if version ~= '' and err ~= '' then
  redis.call('HSET', KEYS[2], 'status', status, 'finished_at', ARGV[8], 'version', version, 'error', err)
elseif version ~= '' then
  redis.call('HSET', KEYS[2], 'status', status, 'finished_at', ARGV[8], 'version', version)
elseif err ~= '' then
  redis.call('HSET', KEYS[2], 'status', status, 'finished_at', ARGV[8], 'error', err)
else
  redis.call('HSET', KEYS[2], 'status', status, 'finished_at', ARGV[8])
end
redis.call('XACK', KEYS[5], ARGV[10], ARGV[1])
if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], ARGV[12]) end
return {status, version, err}

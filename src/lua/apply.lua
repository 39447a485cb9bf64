-- Apply a batch of write tasks, each atomically with its acknowledgement: the heart of the
-- queue's guarantees. An older write never overwrites a newer one (compared by stream id =
-- acceptance order), a redelivered task is a no-op that reports its first outcome, and versions
-- come from one counter so they only ever increase. A task whose Redis calls fail is reported
-- as 'error' (and stays pending for a retry) without stopping the rest of the batch.
--
-- Numbers never pass through Lua's number formatting (which turns 10^14 into '1e+14' and
-- rounds past 2^53): versions are read back as strings, times are formatted with '%d'.
--
-- KEYS[1] key index (zset), KEYS[2] version counter, KEYS[3] task stream, KEYS[4] tombstone
--   index (zset), KEYS[5] attempts of tasks that failed (hash, by stream id), KEYS[6..22] task
--   outcome map (capped.lua), then per task its
--   key's data hash
-- ARGV[1] now ms, ARGV[2] tombstone ms, ARGV[3] consumer group, ARGV[4] notify channel,
-- ARGV[5] (unused), ARGV[6] bytes per outcome bucket, then per task: its stream id, its task id, the number n of its fields, and n name, value pairs:
--   the stream entry's fields as `StreamTask::fields` writes them (the table
--   `kvq::store::FIELDS`): op operation, k key, v value, ttl TTL ms, if If-Match version,
--   inm '1' for If-None-Match, w '1' when a client waits; optional ones may be absent
-- Returns per task {status, version or '', error or ''}; status 'error' means "not applied".
-- A READONLY, NOREPLICAS or MASTERDOWN error fails the whole call instead (Redis unavailable).
-- Loaded after capped.lua.

local now_text = ARGV[1]
local now = tonumber(now_text)
local tombstone_ms = tonumber(ARGV[2])
local group, channel = ARGV[3], ARGV[4]
local outcomes, per_bucket = 6, ARGV[6]
local FIRST_DATA_KEY = outcomes + 1 + BUCKETS

-- Compares decimal strings without converting them to numbers (no leading zeros).
local function cmp_decimal(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
-- true when stream id a is at or after stream id b
local function not_before(a, b)
  local ams, an = string.match(a, '^(%d+)-(%d+)$')
  local bms, bn = string.match(b, '^(%d+)-(%d+)$')
  local c = cmp_decimal(ams, bms)
  if c == 0 then c = cmp_decimal(an, bn) end
  return c >= 0
end

local function apply_one(data, id, task_id, f)
  local op, key = f['op'], f['k']
  local value, ttl = f['v'] or '', f['ttl'] or ''
  local if_match, if_none_match, notify = f['if'] or '', f['inm'] or '', f['w'] or ''
  -- Applying acknowledges in the same call, so an entry no longer pending was finished before
  -- (by this worker or another that reclaimed it): report its first outcome, change nothing.
  if #redis.call('XPENDING', KEYS[3], group, id, id, 1) == 0 then
    local done = capped_get(outcomes, id)
    if done then
      local o = cjson.decode(done)
      return {o[1], o[2], o[3]}
    end
    -- the outcome is beyond the budget now: the key's sequence below still keeps it from
    -- being applied twice
  end
  local failed = redis.call('HGET', KEYS[5], id)
  local attempts = string.format('%d', (tonumber(failed) or 0) + 1)

  local cur = redis.call('HMGET', data, 'seq', 'ver', 'del', 'exp')
  local seq, ver, del, exp = cur[1], cur[2], cur[3], cur[4]
  local status, version, err = 'applied', '', ''

  if seq and not_before(seq, id) then
    if seq == id then
      version = ver or ''
    else
      status = 'superseded'
      err = 'a newer write to this key was applied first'
    end
  else
    local e = tonumber(exp)
    local live = seq and del ~= '1' and (not e or e == 0 or e > now)
    if if_none_match == '1' and live then
      status, err = 'rejected', 'If-None-Match: the key exists'
    elseif if_match ~= '' and (not live or ver ~= if_match) then
      status, err = 'rejected', 'If-Match: the key is not at version ' .. if_match
    else
      redis.call('INCR', KEYS[2])
      -- read back as a string: INCR's reply is a Lua number
      version = redis.call('GET', KEYS[2])
      if op == 'set' then
        if ttl ~= '' then
          local expires = now + tonumber(ttl)
          redis.call('HSET', data, 'v', value, 'ver', version, 'seq', id, 'del', '0',
            'exp', string.format('%d', expires))
          -- keep the sequence past expiry so a late redelivery cannot resurrect the value, and
          -- let tidy_tombstones.lua remove it once no older write can be delivered any more
          redis.call('PEXPIREAT', data, string.format('%d', expires + tombstone_ms))
          redis.call('ZADD', KEYS[4], string.format('%d', expires), data)
        else
          redis.call('HSET', data, 'v', value, 'ver', version, 'seq', id, 'del', '0')
          if exp or del == '1' then
            -- a TTL or a tombstone's expiry from before must not remove the new value
            redis.call('HDEL', data, 'exp')
            redis.call('PERSIST', data)
          end
        end
        -- always (re)index: a lister may have just dropped the key as expired
        redis.call('ZADD', KEYS[1], 0, key)
      else
        redis.call('HDEL', data, 'v', 'exp')
        redis.call('HSET', data, 'ver', version, 'seq', id, 'del', '1')
        redis.call('PEXPIRE', data, ARGV[2])
        redis.call('ZREM', KEYS[1], key)
        -- removed by tidy_tombstones.lua once no older write to the key can be delivered
        redis.call('ZADD', KEYS[4], string.match(id, '^(%d+)-'), data)
      end
    end
  end

  put_outcome(outcomes, per_bucket, id, status, version, err, now_text, op, key, attempts)
  if failed then redis.call('HDEL', KEYS[5], id) end
  redis.call('XACK', KEYS[3], group, id)
  if notify == '1' then redis.call('PUBLISH', channel, task_id) end
  return {status, version, err}
end

local results = {}
local a = 7
for i = FIRST_DATA_KEY, #KEYS do
  local id, task_id, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local f = {}
  for j = 0, n - 1 do f[ARGV[a + 3 + 2 * j]] = ARGV[a + 4 + 2 * j] end
  a = a + 3 + 2 * n
  local ok, res = pcall(apply_one, KEYS[i], id, task_id, f)
  if ok then
    results[#results + 1] = res
  else
    local msg = type(res) == 'table' and (res.err or 'error') or tostring(res)
    -- This server cannot take writes now (it is a replica, has too few replicas, or lost its
    -- master): an outage, not this task's failure. Fail the whole call so the worker reconnects
    -- and retries without counting an attempt; tasks applied before this one stay applied and
    -- report their first outcome when redelivered.
    for _, code in ipairs({'READONLY', 'NOREPLICAS', 'MASTERDOWN'}) do
      if string.sub(msg, 1, #code) == code then return redis.error_reply(msg) end
    end
    -- the failed attempt counts, towards the worker's max_attempts
    pcall(redis.call, 'HINCRBY', KEYS[5], id, 1)
    results[#results + 1] = {'error', '', msg}
  end
end
return results

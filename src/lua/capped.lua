-- Capped maps: field -> value pairs kept in hash buckets `<base><n>` (n = 0, 1, 2 ...), the
-- newest bucket last, so that memory is bounded by a byte budget at any write rate, not by time.
-- The state hash `<base>n` holds `b`, the current bucket's number, and `used`, the bytes put
-- into it. When a put would overflow the current bucket, a new bucket starts and the one
-- BUCKETS back is unlinked (freed in the background), so at most BUCKETS buckets of
-- `per_bucket` bytes each exist: budget = BUCKETS * per_bucket. A get looks through the live
-- buckets, newest first.
-- Kvq loads this file in front of the scripts that use it.
local BUCKETS = 16
-- What one hash entry takes besides its field and value: dict entry, two sds headers, the
-- table slot and allocator rounding (measured with MEMORY USAGE, see the storage tests).
local ENTRY_BYTES = 80

local function capped_put(base, per_bucket, field, value)
  local state = base .. 'n'
  local size = #field + #value + ENTRY_BYTES
  local used = redis.call('HINCRBY', state, 'used', size)
  local b = redis.call('HGET', state, 'b') or '0'
  if used > tonumber(per_bucket) and used ~= size then
    b = string.format('%d', redis.call('HINCRBY', state, 'b', 1))
    redis.call('HSET', state, 'used', size)
    local old = tonumber(b) - BUCKETS
    if old >= 0 then redis.call('UNLINK', base .. string.format('%d', old)) end
  end
  redis.call('HSET', base .. b, field, value)
end

local function capped_get(base, field)
  local b = tonumber(redis.call('HGET', base .. 'n', 'b') or '0')
  for n = b, math.max(b - BUCKETS + 1, 0), -1 do
    local v = redis.call('HGET', base .. string.format('%d', n), field)
    if v then return v end
  end
  return nil
end

-- A task outcome as the outcome map keeps it under the task's stream id: a JSON array of strings
-- [status, version, error, finished_at ms, op, key, attempts] ('' for none).
local function put_outcome(base, per_bucket, stream_id, status, version, err, finished, op, key, attempts)
  capped_put(base, per_bucket, stream_id,
    cjson.encode({status, version, err, finished, op, key, attempts}))
end

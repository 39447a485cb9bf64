-- Capped maps: field -> value pairs kept in BUCKETS hash buckets used as a ring, newest last, so
-- that memory is bounded by a byte budget at any write rate, not by time. A map is passed to a
-- script as 1 + BUCKETS consecutive keys from KEYS[at]: its state hash, then buckets 0 to
-- BUCKETS - 1, so every key a script touches is declared (Redis Cluster routes by them). The
-- state holds `b`, the number of the current bucket (bucket `b % BUCKETS`), and `used`, the bytes
-- put into it. When a put would overflow the current bucket, the next bucket of the ring (the
-- oldest) is unlinked (freed in the background) and becomes the current one, so at most BUCKETS
-- buckets of `per_bucket` bytes each exist: budget = BUCKETS * per_bucket. A get looks through
-- the live buckets, newest first.
-- Kvq loads this file in front of the scripts that use it.
local BUCKETS = 16
-- What one hash entry takes besides its field and value: dict entry, two sds headers, the
-- table slot and allocator rounding (measured with MEMORY USAGE, see the storage tests).
local ENTRY_BYTES = 80

local function capped_bucket(at, n)
  return KEYS[at + 1 + n % BUCKETS]
end

local function capped_put(at, per_bucket, field, value)
  local state = KEYS[at]
  local size = #field + #value + ENTRY_BYTES
  local used = redis.call('HINCRBY', state, 'used', size)
  local b = tonumber(redis.call('HGET', state, 'b') or '0')
  if used > tonumber(per_bucket) and used ~= size then
    b = redis.call('HINCRBY', state, 'b', 1)
    redis.call('HSET', state, 'used', size)
    redis.call('UNLINK', capped_bucket(at, b))
  end
  redis.call('HSET', capped_bucket(at, b), field, value)
end

local function capped_get(at, field)
  local b = tonumber(redis.call('HGET', KEYS[at], 'b') or '0')
  for n = b, math.max(b - BUCKETS + 1, 0), -1 do
    local v = redis.call('HGET', capped_bucket(at, n), field)
    if v then return v end
  end
  return nil
end

-- A task outcome as the outcome map keeps it under the task's stream id: a JSON array of strings
-- [status, version, error, finished_at ms, op, key, attempts] ('' for none).
local function put_outcome(at, per_bucket, stream_id, status, version, err, finished, op, key, attempts)
  capped_put(at, per_bucket, stream_id,
    cjson.encode({status, version, err, finished, op, key, attempts}))
end

-- Shared by enqueue.lua and replay.lua: kvq loads each of them with this file in front, so both
-- add a task to the queue the same way.

-- The task retention in seconds, or nil and the error to return when ARGV holds no valid one.
local function check_retention(text)
  local r = tonumber(text)
  if not r or r < 1 or r > 1e12 or r % 1 ~= 0 then
    return nil, redis.error_reply('ERR task retention must be a whole number of seconds from 1 to 10^12, got ' .. text)
  end
  return r
end

-- An error reply when `key` holds something other than a `want` (or nothing), else nil.
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end

-- Keeps the sorted set `index` (members are keys, oldest first) at `cap` members: deletes the
-- oldest keys beyond it, a few per call, so every call stays short.
local function cap_index(index, cap)
  local over = redis.call('ZCARD', index) - tonumber(cap)
  if over <= 0 then return end
  -- ZPOPMIN answers member, score, member, score...
  local popped = redis.call('ZPOPMIN', index, math.min(over, 8))
  for i = 1, #popped, 2 do redis.call('DEL', popped[i]) end
end

-- Adds the stream entry made of ARGV[first_field..] (name, value pairs) to `stream` and creates
-- its task record, queued, kept `retention` seconds and among the newest `cap` records (`index`
-- orders them by acceptance). Returns the new stream id.
local function add_task(stream, record, first_field, op, key, now, retention, index, cap)
  local fields = {}
  for i = first_field, #ARGV do fields[#fields + 1] = ARGV[i] end
  local seq = redis.call('XADD', stream, '*', unpack(fields))
  redis.call('HSET', record, 'op', op, 'key', key, 'status', 'queued',
    'attempts', 0, 'enqueued_at', now, 'seq', seq)
  redis.call('EXPIRE', record, retention)
  redis.call('ZADD', index, now, record)
  cap_index(index, cap)
  return seq
end


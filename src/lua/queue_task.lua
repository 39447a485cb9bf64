-- Shared by enqueue.lua and replay.lua: kvq loads each of them with this file in front, so both
-- add a task to the queue the same way.

-- An error reply when `key` holds something other than a `want` (or nothing), else nil.
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end

-- Adds the stream entry made of ARGV[first_field..] (name, value pairs) to `stream`. The entry
-- is the task's whole record while it is queued (its id is the task id); its outcome goes to the
-- outcome map when it is applied. Returns the new stream id.
local function add_task(stream, first_field)
  local fields = {}
  for i = first_field, #ARGV do fields[#fields + 1] = ARGV[i] end
  return redis.call('XADD', stream, '*', unpack(fields))
end

-- Give up on a stream entry: copy it whole to the dead-letter stream with the reason, record its
-- task as failed (when the entry is a valid task), acknowledge it.
-- The dead-letter entry holds `seq` (the original stream id), `error`, `attempts`, `at` (ms),
-- then every field of the original entry under its name prefixed with `task.`.
-- KEYS[1] task stream, KEYS[2] dead-letter stream, KEYS[3] attempts of tasks that failed (hash,
-- by stream id), KEYS[4..20] task outcome map (capped.lua)
-- ARGV[1] stream id, ARGV[2] consumer group, ARGV[3] reason, ARGV[4] now ms,
-- ARGV[5] notify channel ('' none), ARGV[6] task id ('' for an entry that is no valid task: no
-- outcome is recorded for it), ARGV[7] op, ARGV[8] key, ARGV[9] (unused),
-- ARGV[10] bytes per outcome bucket
-- Returns the attempts recorded.
-- Loaded after capped.lua.
local MAX_FIELDS = 1000
local attempts = '0'
if ARGV[6] ~= '' then
  attempts = redis.call('HGET', KEYS[3], ARGV[1]) or '0'
  redis.call('HDEL', KEYS[3], ARGV[1])
end
local fields = {'seq', ARGV[1], 'error', ARGV[3], 'attempts', attempts, 'at', ARGV[4]}
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if entry[1] and type(entry[1][2]) == 'table' then
  local raw = entry[1][2]
  local n = math.min(#raw, 2 * MAX_FIELDS)
  for i = 1, n - 1, 2 do
    fields[#fields + 1] = 'task.' .. raw[i]
    fields[#fields + 1] = raw[i + 1]
  end
  if #raw > n then
    fields[#fields + 1] = 'truncated'
    fields[#fields + 1] = string.format('%d', (#raw - n) / 2)
  end
elseif ARGV[6] ~= '' then
  -- the entry itself is gone: keep what the worker knew of it
  for _, f in ipairs({{'op', ARGV[7]}, {'k', ARGV[8]}}) do
    fields[#fields + 1] = 'task.' .. f[1]
    fields[#fields + 1] = f[2]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
if ARGV[6] ~= '' then
  put_outcome(4, ARGV[10], ARGV[1], 'failed', '', ARGV[3], ARGV[4], ARGV[7], ARGV[8], attempts)
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return attempts

-- Give up on a stream entry: copy it whole to the dead-letter stream with the reason, mark its
-- task failed (when the entry is a valid task), acknowledge it.
-- The dead-letter entry holds `seq` (the original stream id), `error`, `attempts`, `at` (ms),
-- then every field of the original entry under its name prefixed with `task.`.
-- KEYS[1] task stream, KEYS[2] dead-letter stream, KEYS[3] task record ('' for an entry that
--   is not a valid task: its record, if any, is not touched)
-- ARGV[1] stream id, ARGV[2] consumer group, ARGV[3] reason, ARGV[4] now ms,
-- ARGV[5] notify channel ('' none), ARGV[6] task id, ARGV[7] op, ARGV[8] key, ARGV[9] retention s
-- Returns the attempts recorded.
local MAX_FIELDS = 1000
local attempts = '0'
if KEYS[3] ~= '' then attempts = redis.call('HGET', KEYS[3], 'attempts') or '0' end
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
  for _, f in ipairs({{'t', ARGV[6]}, {'op', ARGV[7]}, {'k', ARGV[8]}}) do
    fields[#fields + 1] = 'task.' .. f[1]
    fields[#fields + 1] = f[2]
  end
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
if KEYS[3] ~= '' then
  redis.call('HSET', KEYS[3], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4],
    'op', ARGV[7], 'key', ARGV[8], 'seq', ARGV[1])
  redis.call('HSETNX', KEYS[3], 'enqueued_at', string.match(ARGV[1], '^(%d+)') or ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return attempts

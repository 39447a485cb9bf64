-- Enqueue one write task atomically: idempotency check, stream entry, task record.
-- Everything that can fail is checked before the stream entry is added, so a write is never
-- reported as failed after it was queued.
-- KEYS[1] task stream, KEYS[2] task record, KEYS[3] idempotency key ('' when none)
-- ARGV[1] task id, ARGV[2] op, ARGV[3] key, ARGV[4] retention seconds,
-- ARGV[5] task record key prefix, ARGV[6] now ms, ARGV[7] request fingerprint,
-- ARGV[8..] the stream entry's fields as name, value pairs
-- Returns {task id, status, duplicate, enqueued_at}: duplicate 0 new task, 1 the same request
-- under the same idempotency key (nothing enqueued), 2 the idempotency key belongs to a
-- different request (nothing enqueued; the task id is the other request's).
local retention = tonumber(ARGV[4])
if not retention or retention < 1 or retention > 1e12 or retention % 1 ~= 0 then
  return redis.error_reply('ERR task retention must be a whole number of seconds from 1 to 10^12, got ' .. ARGV[4])
end
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want)
  end
end
local bad = check_type(KEYS[1], 'stream') or check_type(KEYS[2], 'hash')
if bad then return bad end
if KEYS[3] ~= '' then
  bad = check_type(KEYS[3], 'string')
  if bad then return bad end
  local existing = redis.call('GET', KEYS[3])
  if existing then
    -- 'task id' or 'task id fingerprint'
    local id, fp = string.match(existing, '^(%S+) (%S+)$')
    if not id then id = existing end
    if fp and fp ~= ARGV[7] then
      return {id, 'queued', 2, ARGV[6]}
    end
    local rec = redis.call('HMGET', ARGV[5] .. id, 'status', 'enqueued_at')
    return {id, rec[1] or 'queued', 1, rec[2] or ARGV[6]}
  end
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local seq = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2], 'op', ARGV[2], 'key', ARGV[3], 'status', 'queued',
  'attempts', 0, 'enqueued_at', ARGV[6], 'seq', seq)
redis.call('EXPIRE', KEYS[2], retention)
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. ARGV[7], 'EX', retention)
end
return {ARGV[1], 'queued', 0, ARGV[6]}

-- Enqueue one write task atomically: idempotency check, stream entry, task record.
-- KEYS[1] task stream, KEYS[2] task record, KEYS[3] idempotency key ('' when none)
-- ARGV[1] task id, ARGV[2] op, ARGV[3] key, ARGV[4] value, ARGV[5] ttl ms ('' none),
-- ARGV[6] If-Match version ('' none), ARGV[7] If-None-Match ('1' or ''), ARGV[8] notify ('1' or ''),
-- ARGV[9] retention seconds, ARGV[10] task record key prefix, ARGV[11] now ms
-- Returns {task id, status, duplicate (0/1), enqueued_at}
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    local rec = redis.call('HMGET', ARGV[10] .. existing, 'status', 'enqueued_at')
    return {existing, rec[1] or 'queued', 1, rec[2] or ARGV[11]}
  end
end
local fields = {'t', ARGV[1], 'op', ARGV[2], 'k', ARGV[3]}
if ARGV[2] == 'set' then
  table.insert(fields, 'v'); table.insert(fields, ARGV[4])
end
if ARGV[5] ~= '' then table.insert(fields, 'ttl'); table.insert(fields, ARGV[5]) end
if ARGV[6] ~= '' then table.insert(fields, 'if'); table.insert(fields, ARGV[6]) end
if ARGV[7] ~= '' then table.insert(fields, 'inm'); table.insert(fields, '1') end
if ARGV[8] ~= '' then table.insert(fields, 'w'); table.insert(fields, '1') end
local seq = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2], 'op', ARGV[2], 'key', ARGV[3], 'status', 'queued',
  'attempts', 0, 'enqueued_at', ARGV[11], 'seq', seq)
redis.call('EXPIRE', KEYS[2], ARGV[9])
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[9])
end
return {ARGV[1], 'queued', 0, ARGV[11]}

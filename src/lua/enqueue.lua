-- Enqueue one write task atomically: idempotency check, stream entry, task record.
-- Everything that can fail is checked before the stream entry is added, so a write is never
-- reported as failed after it was queued.
-- KEYS[1] task stream, KEYS[2] task record, KEYS[3] idempotency key ('' when none),
-- KEYS[4] index of task records, KEYS[5] index of idempotency keys (sorted sets by time)
-- ARGV[1] task id, ARGV[2] op, ARGV[3] key, ARGV[4] retention seconds,
-- ARGV[5] task record key prefix, ARGV[6] now ms, ARGV[7] request fingerprint,
-- ARGV[8] most task records kept, ARGV[9] most idempotency keys kept,
-- ARGV[10..] the stream entry's fields as name, value pairs
-- Returns {task id, status, duplicate, enqueued_at}: duplicate 0 new task, 1 the same request
-- under the same idempotency key (nothing enqueued), 2 the idempotency key belongs to a
-- different request (nothing enqueued; the task id is the other request's).
-- Loaded after queue_task.lua (check_retention, check_type, add_task).
local retention, bad = check_retention(ARGV[4])
if bad then return bad end
bad = check_type(KEYS[1], 'stream') or check_type(KEYS[2], 'hash')
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
add_task(KEYS[1], KEYS[2], 10, ARGV[2], ARGV[3], ARGV[6], retention, KEYS[4], ARGV[8])
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. ARGV[7], 'EX', retention)
  redis.call('ZADD', KEYS[5], ARGV[6], KEYS[3])
  cap_index(KEYS[5], ARGV[9])
end
return {ARGV[1], 'queued', 0, ARGV[6]}

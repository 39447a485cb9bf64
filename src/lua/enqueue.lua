-- Enqueue one write task atomically: idempotency check, stream entry, idempotency record.
-- Everything that can fail is checked before the stream entry is added, so a write is never
-- reported as failed after it was queued.
-- KEYS[1] task stream, KEYS[2..18] idempotency map (capped.lua; unused without an
-- Idempotency-Key), KEYS[19..35] task outcome map (by stream id)
-- ARGV[1] Idempotency-Key ('' none), ARGV[2] request fingerprint, ARGV[3] now ms,
-- ARGV[4] bytes per idempotency bucket, ARGV[5..] the stream entry's fields as name, value pairs
-- Returns {stream id, status, duplicate, enqueued_at}: duplicate 0 new task, 1 the same request
-- under the same idempotency key (nothing enqueued), 2 the idempotency key belongs to a
-- different request (nothing enqueued; the stream id is the other request's).
-- Loaded after capped.lua and queue_task.lua.
local IDEMPOTENCY, OUTCOMES = 2, 2 + 1 + BUCKETS
local bad = check_type(KEYS[1], 'stream')
if bad then return bad end
if ARGV[1] ~= '' then
  local existing = capped_get(IDEMPOTENCY, ARGV[1])
  if existing then
    -- 'stream id fingerprint'
    local id, fp = string.match(existing, '^(%S+) (%S+)$')
    local at = string.match(id or '', '^(%d+)-')
    if not at then
      return redis.error_reply('ERR idempotency record of ' .. ARGV[1] .. ' is malformed')
    end
    if fp ~= ARGV[2] then
      return {id, 'queued', 2, at}
    end
    local outcome = capped_get(OUTCOMES, id)
    local status = outcome and cjson.decode(outcome)[1] or 'queued'
    return {id, status, 1, at}
  end
end
local id = add_task(KEYS[1], 5)
if ARGV[1] ~= '' then
  capped_put(IDEMPOTENCY, ARGV[4], ARGV[1], id .. ' ' .. ARGV[2])
end
return {id, 'queued', 0, string.match(id, '^(%d+)-')}

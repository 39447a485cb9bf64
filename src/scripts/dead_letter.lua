-- Give up on a task: copy it to the dead-letter stream, mark it failed, acknowledge it.
-- KEYS[1] task stream, KEYS[2] task record, KEYS[3] dead-letter stream
-- ARGV[1] stream id, ARGV[2] consumer group, ARGV[3] error, ARGV[4] now ms,
-- ARGV[5] notify channel ('' none), ARGV[6] task id, ARGV[7] op, ARGV[8] key, ARGV[9] retention s
local attempts = redis.call('HGET', KEYS[2], 'attempts') or '0'
redis.call('XADD', KEYS[3], '*', 't', ARGV[6], 'seq', ARGV[1], 'op', ARGV[7], 'k', ARGV[8],
  'error', ARGV[3], 'attempts', attempts, 'at', ARGV[4])
redis.call('HSET', KEYS[2], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[9])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return attempts

-- Replay one dead letter: remove it from the dead-letter stream and enqueue its write again as a
-- new task, atomically (a dead letter is replayed at most once, even by concurrent replays).
-- KEYS[1] dead-letter stream, KEYS[2] task stream, KEYS[3] new task record
-- ARGV[1] dead-letter entry id, ARGV[2] new task id, ARGV[3] op, ARGV[4] key,
-- ARGV[5] retention seconds, ARGV[6] now ms, ARGV[7..] the new stream entry's fields
-- Returns the new stream id, or nil when the dead letter is not there (any more).
local retention = tonumber(ARGV[5])
if not retention or retention < 1 or retention > 1e12 or retention % 1 ~= 0 then
  return redis.error_reply('ERR task retention must be a whole number of seconds from 1 to 10^12, got ' .. ARGV[5])
end
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'none' and t ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' holds a ' .. t .. ', not a stream')
end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local seq = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('HSET', KEYS[3], 'op', ARGV[3], 'key', ARGV[4], 'status', 'queued',
  'attempts', 0, 'enqueued_at', ARGV[6], 'seq', seq)
redis.call('EXPIRE', KEYS[3], retention)
return seq

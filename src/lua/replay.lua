-- Replay one dead letter: remove it from the dead-letter stream and enqueue its write again as a
-- new task, atomically (a dead letter is replayed at most once, even by concurrent replays).
-- KEYS[1] dead-letter stream, KEYS[2] task stream, KEYS[3] new task record, KEYS[4] index of
--   task records
-- ARGV[1] dead-letter entry id, ARGV[2] new task id, ARGV[3] op, ARGV[4] key,
-- ARGV[5] retention seconds, ARGV[6] now ms, ARGV[7] most task records kept,
-- ARGV[8..] the new stream entry's fields
-- Returns the new stream id, or nil when the dead letter is not there (any more).
-- Loaded after queue_task.lua (check_retention, check_type, add_task).
local retention, bad = check_retention(ARGV[5])
if bad then return bad end
bad = check_type(KEYS[2], 'stream')
if bad then return bad end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return add_task(KEYS[2], KEYS[3], 8, ARGV[3], ARGV[4], ARGV[6], retention, KEYS[4], ARGV[7])

-- Replay one dead letter: remove it from the dead-letter stream and enqueue its write again as a
-- new task, atomically (a dead letter is replayed at most once, even by concurrent replays).
-- KEYS[1] dead-letter stream, KEYS[2] task stream
-- ARGV[1] dead-letter entry id, ARGV[2..] the new stream entry's fields
-- Returns the new stream id, or nil when the dead letter is not there (any more).
-- Loaded after queue_task.lua (check_type, add_task).
local bad = check_type(KEYS[2], 'stream')
if bad then return bad end
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return add_task(KEYS[2], 2)

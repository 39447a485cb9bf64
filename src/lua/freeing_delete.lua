-- Put in front of enqueue.lua (after capped.lua and queue_task.lua) for a delete sent while
-- Redis is full: the script then runs flagged allow-oom, so it lets through only a delete of a
-- key that holds a value now (applied, it frees more than its stream entry takes); anything else
-- gets the OOM error Redis itself gives, and nothing is written.
-- KEYS[36] the data hash of the key (the other keys and ARGV as in enqueue.lua)
local cur = redis.call('HMGET', KEYS[36], 'ver', 'del', 'exp')
local e = tonumber(cur[3])
local freeing = cur[1] ~= false and cur[2] ~= '1' and (not e or e == 0 or e > tonumber(ARGV[3]))
if not freeing then
  return redis.error_reply("OOM command not allowed when used memory > 'maxmemory' (only a delete of a key that holds a value is taken while the store is full)")
end

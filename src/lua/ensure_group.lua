-- Create the task stream and its consumer group unless the group exists. Flagged allow-oom (see
-- lua.rs): a worker must be able to start on a full Redis to finish the writes it accepted,
-- and a group takes a few bytes.
-- KEYS[1] task stream; ARGV[1] consumer group. Returns 1 when created, 0 when it existed.
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err then
  if string.find(r.err, 'BUSYGROUP', 1, true) then return 0 end
  return r
end
return 1

-- Look a task up: its outcome while the outcome map keeps it, else its stream entry while it is
-- queued (undelivered, or delivered and not yet acknowledged).
-- KEYS[1] task stream, KEYS[2] attempts of tasks that failed (hash), KEYS[3..19] task outcome
-- map (capped.lua, by stream id)
-- ARGV[1] (unused), ARGV[2] the task's stream id,
-- ARGV[3] (unused), ARGV[4] consumer group, ARGV[5] the oldest finish time (ms) still reported
-- Returns {'done', outcome JSON} (see put_outcome), {'queued', op, key, attempts}, or nil when
-- kvq knows nothing of the task (any more).
-- Loaded after capped.lua.
local done = capped_get(3, ARGV[2])
if done then
  local finished = tonumber(cjson.decode(done)[4]) or 0
  if finished < tonumber(ARGV[5]) then return false end
  return {'done', done}
end
local ok, entry = pcall(redis.call, 'XRANGE', KEYS[1], ARGV[2], ARGV[2])
if not ok or not entry[1] then return false end
-- without the consumer group (no worker started yet) nothing was delivered
local ok_pending, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[4], ARGV[2], ARGV[2], 1)
local queued = not ok_pending or #pending > 0
if not queued then
  -- undelivered: after the group's last delivered id
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == ARGV[4] then
      local last_ms, last_n = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
      local ms, n = string.match(ARGV[2], '^(%d+)-(%d+)$')
      queued = tonumber(ms) > tonumber(last_ms) or (ms == last_ms and tonumber(n) > tonumber(last_n))
    end
  end
end
if not queued then return false end
local fields = {}
local raw = entry[1][2]
for i = 1, #raw - 1, 2 do fields[raw[i]] = raw[i + 1] end
return {'queued', fields['op'] or '', fields['k'] or '', redis.call('HGET', KEYS[2], ARGV[2]) or '0'}

-- Claim an Idempotency-Key in the shard the token itself maps to (cluster mode, where the
-- request's key may live in any shard): the first request with the token records its key's
-- shard and its fingerprint here, so the token used again for a different request is refused
-- whichever key that request names. The enqueue in the key's shard (enqueue.lua) stays what
-- makes a retry enqueue nothing.
-- KEYS[1..17] the claim map (capped.lua)
-- ARGV[1] Idempotency-Key, ARGV[2] request fingerprint, ARGV[3] shard of the request's key,
-- ARGV[4] bytes per claim bucket
-- Returns {shard, fingerprint} of the first request with the token (this one, when it is new).
-- Loaded after capped.lua.
local existing = capped_get(1, ARGV[1])
if existing then
  local shard, fp = string.match(existing, '^(%d+) (%S+)$')
  if shard then return {shard, fp} end
end
capped_put(1, ARGV[4], ARGV[1], ARGV[3] .. ' ' .. ARGV[2])
return {ARGV[3], ARGV[2]}

-- The task an Idempotency-Key enqueued in this shard, if the idempotency map still has it.
-- KEYS[1..17] the idempotency map (capped.lua); ARGV[1] Idempotency-Key
-- Returns the record 'stream id fingerprint' or nil.
-- Loaded after capped.lua.
return capped_get(1, ARGV[1]) or false

-- wrk script: PUT /v1/keys/{unique key} with a 100-byte value.
-- Environment:
--   BENCH_PREFIX  key prefix, unique per phase (keys never repeat across phases or threads)
--   BENCH_KEYS    when set, overwrite a fixed set of this many keys per thread instead
--   BENCH_VALUE_BYTES  value size (default 100)
--   BENCH_LIMIT   stop each thread after this many responses (0: run for -d)
--   BENCH_DELAY_MS  mean pause between a response and the next request on a connection
--                 (fractional values are dithered between floor and ceil); 0: no pause
--   BENCH_TOKEN   when set, sent as `Authorization: Bearer <token>`
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local common = require("common")
local stamp = require("stamp")

local prefix = os.getenv("BENCH_PREFIX") or ("w" .. os.time())
local size = tonumber(os.getenv("BENCH_VALUE_BYTES") or "100")
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "0")

local body = '{"value":"' .. string.rep("v", size) .. '"}'
local headers = { ["Content-Type"] = "application/json" }
local token = os.getenv("BENCH_TOKEN") or ""
if token ~= "" then headers["Authorization"] = "Bearer " .. token end
local counter = 0

setup, init = common.numbered_threads()

function request()
  counter = counter + 1
  local n = counter
  if nkeys > 0 then n = counter % nkeys end
  return wrk.format("PUT", "/v1/keys/" .. prefix .. "-" .. (tid or 0) .. "-" .. n, headers, body)
end

if limit > 0 then
  response = stamp.stop_after(limit)
end

if delay_ms > 0 then
  local base = math.floor(delay_ms)
  local frac = delay_ms - base
  function delay()
    if math.random() < frac then
      return base + 1
    end
    return base
  end
end

done = common.done

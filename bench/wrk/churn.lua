-- wrk script for the bounded-memory phase: each thread sends BENCH_LIMIT requests, then stops.
-- Environment:
--   BENCH_PREFIX  key prefix, unique per run
--   BENCH_MODE    overwrite: PUT one of BENCH_KEYS keys per thread, round robin;
--                 churn: PUT a new key, and DELETE the one put LAG pairs before (two requests
--                 per pair; the lag lets the PUT be accepted before its DELETE is sent, as the
--                 thread's connections run concurrently);
--                 idem: PUT one of BENCH_KEYS keys with a new Idempotency-Key each time
--   BENCH_KEYS    keys per thread for overwrite and idem (default 50)
--   BENCH_LIMIT   requests per thread (each thread then writes its stamp to BENCH_STAMP_DIR)
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local common = require("common")
local stamp = require("stamp")

local prefix = os.getenv("BENCH_PREFIX") or ("c" .. os.time())
local mode = os.getenv("BENCH_MODE") or "overwrite"
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "50")
local limit = tonumber(os.getenv("BENCH_LIMIT") or "1000")

local body = '{"value":"' .. string.rep("v", 100) .. '"}'
local counter = 0
local LAG = 64

setup, init = common.numbered_threads()

function request()
  counter = counter + 1
  local t = tid or 0
  if mode == "churn" then
    local pair = math.floor((counter + 1) / 2)
    if counter % 2 == 1 then
      local path = "/v1/keys/" .. prefix .. "-" .. t .. "-" .. pair
      return wrk.format("PUT", path, { ["Content-Type"] = "application/json" }, body)
    end
    -- pairs below 1 name keys never put: their deletes are no-ops, as cheap as any other
    return wrk.format("DELETE", "/v1/keys/" .. prefix .. "-" .. t .. "-" .. (pair - LAG))
  end
  local path = "/v1/keys/" .. prefix .. "-" .. t .. "-" .. (counter % nkeys)
  local headers = { ["Content-Type"] = "application/json" }
  if mode == "idem" then headers["Idempotency-Key"] = prefix .. "-" .. t .. "-" .. counter end
  return wrk.format("PUT", path, headers, body)
end

response = stamp.stop_after(limit)

done = common.done

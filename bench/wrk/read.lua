-- wrk script: GET /v1/keys/{key} of keys that exist (seeded by the suite before the phase).
-- Environment: BENCH_PREFIX and BENCH_KEYS: the seeded keys are PREFIX-{0,1}-{1..BENCH_KEYS}
-- (the suite seeds them with write.lua, two wrk threads of one connection each; wrk calls
-- request() once more than it sends on one thread, so key 1 may be missing: reads use 2..N).
-- BENCH_TOKEN, when set, is sent as `Authorization: Bearer <token>`.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local prefix = os.getenv("BENCH_PREFIX") or "r"
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "10000")

local headers = {}
local token = os.getenv("BENCH_TOKEN") or ""
if token ~= "" then headers["Authorization"] = "Bearer " .. token end

setup, init = common.numbered_threads()

function request()
  return wrk.format("GET", "/v1/keys/" .. prefix .. "-" .. math.random(0, 1) .. "-" .. math.random(2, nkeys), headers)
end

done = common.done

-- wrk script: GET /v1/keys/{key} of keys that exist (seeded by the suite before the phase).
-- Environment: BENCH_PREFIX and BENCH_KEYS: the seeded keys are PREFIX-{0,1}-{1..BENCH_KEYS}
-- (the suite seeds them with write.lua, two wrk threads of one connection each; wrk calls
-- request() once more than it sends on one thread, so key 1 may be missing: reads use 2..N).
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
local common = require("common")

local prefix = os.getenv("BENCH_PREFIX") or "r"
local nkeys = tonumber(os.getenv("BENCH_KEYS") or "10000")

setup, init = common.numbered_threads()

function request()
  return wrk.format("GET", "/v1/keys/" .. prefix .. "-" .. math.random(0, 1) .. "-" .. math.random(2, nkeys))
end

done = common.done

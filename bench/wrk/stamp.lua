-- Wall-clock stamps for wrk scripts (LuaJIT ffi; wrk's Lua has no sub-second clock).
-- A thread that stops after BENCH_LIMIT answers writes the time of its last answer to
-- BENCH_STAMP_DIR/thread-<tid>, so the suite knows when the last 202 arrived even though
-- wrk itself only exits after -d.
local ffi = require("ffi")
pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]])

local M = {}
local ts = ffi.new("bench_timespec")

function M.now()
  ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME, comparable with Python's time.time()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

function M.write(tid, answered)
  local dir = os.getenv("BENCH_STAMP_DIR")
  if not dir then
    return
  end
  local f = io.open(dir .. "/thread-" .. tostring(tid), "w")
  if f then
    f:write(string.format("%.6f %d\n", M.now(), answered))
    f:close()
  end
end

-- wrk's response() hook for a thread that stops after `limit` answers, stamping the last one.
function M.stop_after(limit)
  local answered = 0
  return function(status, hdrs, resp_body)
    answered = answered + 1
    if answered == limit then
      M.write(tid or 0, answered)
      wrk.thread:stop()
    end
  end
end

return M

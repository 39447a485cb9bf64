-- Shared by the wrk scripts in bench/wrk/: prints the run's figures as one JSON line that
-- bench/kvqbench/wrk.py parses (latencies in microseconds, wrk's own histogram).
local M = {}

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end

-- wrk's setup() and init() hooks: number the threads (each thread's global `tid`) and seed each
-- thread's random numbers differently, so keys and choices do not repeat across threads.
function M.numbered_threads()
  local threads = {}
  local function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
  end
  local function init(args)
    math.randomseed(os.time() + (tid or 0) * 7919)
  end
  return setup, init
end

return M

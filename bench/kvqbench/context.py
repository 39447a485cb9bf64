"""The state the phases share: parameters, processes, the recorded figures, the kvq processes
under test, and the helpers every phase uses (starting kvq, one measured wrk load, waiting for
the queue to drain, memory snapshots)."""

import os
import tempfile
import time

from . import REPO, log
from .figures import figure_row, format_value
from .http import Http, wait_ready
from .procs import CpuWatch, Procs, free_port, proc_mem
from .wrk import run_wrk

# Per mode: redis-benchmark requests, warm-up and measured seconds per load, seconds per
# sustained-rate step and at most how many, burst (and apply backlog) size, keys seeded for the
# reads, start-ups timed per binary, and the bound on every queue-drain wait.
PARAMS = {
    "full": {"soak": 300, "rb_n": 200000, "warm": 3, "dur": 15, "step": 30, "max_steps": 8, "burst": 100000,
             "seed": 10000, "startup_reps": 10, "drain_timeout": 240},
    "quick": {"soak": 30, "rb_n": 20000, "warm": 1, "dur": 3, "step": 4, "max_steps": 3, "burst": 10000,
              "seed": 2000, "startup_reps": 3, "drain_timeout": 60},
    # smoke: every phase once, as briefly as wrk allows; a check that the suite works, not a measurement
    "smoke": {"soak": 4, "rb_n": 2000, "warm": 0, "dur": 1, "step": 2, "max_steps": 2, "burst": 2000,
              "seed": 400, "startup_reps": 1, "drain_timeout": 30},
}


class Context:
    def __init__(self, args, params, bin_dir):
        self.args = args
        self.p = params
        self.quick = args.quick
        self.smoke = args.smoke
        self.bin_dir = bin_dir
        self.local = args.url is None
        self.workdir = tempfile.mkdtemp(prefix="kvq-bench-")
        self.stampdir = os.path.join(self.workdir, "stamps")
        os.makedirs(self.stampdir)
        self.procs = Procs(self.workdir)
        self.run_id = f"{int(time.time()) % 100000000:x}"
        self.results = {"figures": [], "raw": {}, "memory": {}, "notes": []}
        # notes that say a phase did not work (not merely that the machine was busy): a smoke run fails on them
        self.problems = []
        self.log_warnings = {}  # kvq log file -> WARN/ERROR lines, counted when the run ends
        self.ref = None
        self.url = args.url
        self.server = None
        self.workers = []
        self.redis_port = None

    # -- what a run records

    def figure(self, key, label, value, unit, target=None, cmp=None, ref=None, ratio_target=None):
        """Records one table row; `target` is a number, `cmp` '>=' or '<=', `ref` 'SET'/'GET' for a
        ratio, `ratio_target` a least ratio to `ref` as the target instead of a number."""
        row = figure_row(key, label, value, unit, target, cmp, ref, self.ref, ratio_target)
        self.results["figures"].append(row)
        met = row["met"]
        log(f"  {label}: {format_value(value)} {unit}" +
            (f" (target {row['target']}: {'met' if met else 'NOT met'})" if met is not None else ""))

    def note(self, text):
        self.results["notes"].append(text)
        log("WARNING " + text)

    def problem(self, text):
        self.problems.append(text)
        self.note(text)

    # -- kvq processes

    def kvq_env(self, extra=None):
        # Without authentication unless a phase passes its tokens (the auth phase compares both).
        env = {"KVQ__LOG__FORMAT": "json", "RUST_LOG": "warn", "KVQ__AUTH__MODE": "none"}
        if self.redis_port:
            env["KVQ__REDIS__URL"] = f"redis://127.0.0.1:{self.redis_port}"
        env.update(extra or {})
        return env

    def bin(self, name):
        return os.path.join(self.bin_dir, name)

    def start_server(self, extra=None, name="kvq-server"):
        port = free_port()
        p = self.procs.start(name, [self.bin("kvq-server")],
                             self.kvq_env({"KVQ__SERVER__BIND": f"127.0.0.1:{port}", **(extra or {})}))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 30)
        return p, url

    def start_worker(self, n=1, extra=None):
        port = free_port()
        p = self.procs.start(f"kvq-worker-{n}", [self.bin("kvq-worker")],
                             self.kvq_env({"KVQ__WORKER__BIND": f"127.0.0.1:{port}",
                                           "KVQ__WORKER__CONSUMER_NAME": f"bench-w{n}", **(extra or {})}))
        wait_ready(f"http://127.0.0.1:{port}", 30)
        return p

    def stop_workers(self, timeout=15.0):
        for w in self.workers:
            self.procs.stop(w, timeout=timeout)
        self.workers = []

    # -- measuring

    def memory(self, when):
        if not self.local:
            return
        snap = {"server": proc_mem(self.server.pid) if self.server else {}}
        if self.workers:
            snap["worker"] = proc_mem(self.workers[0].pid)
        self.results["memory"][when] = snap
        log(f"  memory {when}: " + ", ".join(f"{k} RSS {v.get('VmRSS')} MiB HWM {v.get('VmHWM')} MiB" for k, v in snap.items()))

    def wait_drained(self, what, timeout=None):
        """Waits (bounded) until kvq_queue_depth is 0; returns seconds waited or None."""
        timeout = timeout or self.p["drain_timeout"]
        h = Http(self.url)
        t0 = time.monotonic()
        depth = None
        try:
            while time.monotonic() - t0 < timeout:
                depth = h.queue_depth()
                if depth == 0:
                    return time.monotonic() - t0
                time.sleep(0.1)
        finally:
            h.close()
        self.problem(f"queue not drained after {what} within {timeout}s (depth {depth})")
        return None

    def load(self, label, script, conns, env, url=None):
        """A warm-up (none when its length is 0), then one measured wrk run of `script` at `conns` connections
        against `url` (default: the suite's server); its figures."""
        url = url or self.url
        threads = 1 if conns == 1 else 2
        if self.p["warm"]:
            run_wrk(url, script, conns, threads, self.p["warm"],
                    {**env, "BENCH_PREFIX": env.get("BENCH_PREFIX", "") + "-warm"} if script == "write.lua" else env)
        watch = CpuWatch(self.procs)
        d = run_wrk(url, script, conns, threads, self.p["dur"], env)
        d["cpu"] = watch.result()
        self.results["raw"][label] = d
        self.check_disturbed(label, d["cpu"])
        if d["err_status"] or d["socket_errors"]:
            self.problem(f"{label}: {d['err_status']} non-2xx answers, {d['socket_errors']} socket errors of {d['requests']}")
        elif d["requests"] == 0:
            self.problem(f"{label}: wrk sent no requests")
        return d

    def check_disturbed(self, label, cpu):
        if self.local and cpu.get("foreign_cores_busy", 0) > 0.3:
            self.note(f"{label}: other processes used {cpu['foreign_cores_busy']} cores meanwhile; "
                      "its figures are disturbed")


def default_bin_dir():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release")

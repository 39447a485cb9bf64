"""Running wrk with the Lua scripts in bench/wrk/ and parsing the one JSON line they print."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time

from . import WRK_DIR

# the figures bench/wrk/common.lua prints; parse_wrk refuses a line that lacks one
WRK_FIELDS = ("requests", "duration_us", "bytes", "err_connect", "err_read", "err_write", "err_status",
              "err_timeout", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")


def wrk_argv(url, script, conns, threads, duration, timeout_s=5):
    return ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", f"{timeout_s}s",
            "-s", os.path.join(WRK_DIR, script), url]


def wrk_env(env):
    full_env = dict(os.environ, BENCH_WRK_DIR=WRK_DIR)
    full_env.update(env or {})
    return full_env


def parse_wrk(stdout, stderr=""):
    """wrk's figures from the BENCH_JSON line, plus ok, rps, ok_rps, socket_errors and *_ms."""
    m = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no figures:\n{stdout}\n{stderr}")
    d = json.loads(m.group(1))
    missing = [k for k in WRK_FIELDS if k not in d]
    if missing:
        raise RuntimeError(f"wrk's figures lack {', '.join(missing)}:\n{m.group(1)}")
    secs = d["duration_us"] / 1e6
    errors = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
    d["ok"] = d["requests"] - d["err_status"]
    d["rps"] = d["requests"] / secs if secs else 0.0
    d["ok_rps"] = d["ok"] / secs if secs else 0.0
    d["socket_errors"] = errors
    for p in ("p50", "p90", "p99", "p999", "max", "mean"):
        d[f"{p}_ms"] = round(d[f"{p}_us"] / 1000, 3)
    return d


def run_wrk(url, script, conns, threads, duration, env=None, timeout_s=5):
    """Runs wrk with a bench/wrk/ Lua script for `duration` s; returns its figures (rates per second)."""
    r = subprocess.run(wrk_argv(url, script, conns, threads, duration, timeout_s), env=wrk_env(env),
                       capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(r.stdout, r.stderr)


class WrkBackground:
    """wrk running in the background (for paced steps and bursts); finish() stops it and parses."""

    def __init__(self, procs, url, script, conns, threads, duration, env):
        self.procs = procs
        self.out = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(wrk_argv(url, script, conns, threads, duration), env=wrk_env(env),
                                  stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        procs.track("wrk", self.p)

    def running(self):
        return self.p.poll() is None

    def finish(self, interrupt=False, timeout=120):
        if interrupt and self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)
        self.procs.forget(self.p)
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        return parse_wrk(text)


def read_stamps(stampdir):
    """The wall-clock times in the stamp files bench/wrk/stamp.lua writes (one per wrk thread)."""
    stamps = []
    for f in sorted(os.listdir(stampdir)):
        with open(os.path.join(stampdir, f)) as fh:
            stamps.append(float(fh.read().split()[0]))
    return stamps


def burst(procs, url, n, conns, prefix, stampdir, timeout):
    """Sends n writes as fast as wrk can; returns (wrk figures, wall time of the last answer)."""
    threads = 2 if conns >= 2 else 1
    for f in os.listdir(stampdir):
        os.unlink(os.path.join(stampdir, f))
    per_thread = (n + threads - 1) // threads
    w = WrkBackground(procs, url, "write.lua", conns, threads, int(timeout) + 5,
                      {"BENCH_PREFIX": prefix, "BENCH_LIMIT": str(per_thread), "BENCH_STAMP_DIR": stampdir})
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and w.running():
        if len(os.listdir(stampdir)) >= threads:
            break
        time.sleep(0.02)
    stamps = read_stamps(stampdir)
    figures = w.finish(interrupt=True)
    if len(stamps) < threads:
        raise RuntimeError(f"burst of {n} writes did not finish within {timeout}s")
    return figures, max(stamps)

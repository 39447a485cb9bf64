#!/usr/bin/env python3
"""kvq benchmark suite (issue 5). Standard library only; started by bench/run.sh.

Local mode (default): builds the release binaries, starts a fresh redis-server, kvq-server and
kvq-worker on free loopback ports, runs redis-benchmark as the in-run reference, then the phases
of bench/README.md. `--url http://host:port` runs only the load phases against a deployed system.
Every process it starts is stopped at the end; every wait is bounded.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
MiB = 1024 * 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Procs:
    """Every process the suite starts; their pids are mirrored to $BENCH_PIDFILE for run.sh's trap."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = {}  # pid -> (name, Popen)
        self.pidfile = os.environ.get("BENCH_PIDFILE")

    def _sync(self):
        if self.pidfile:
            with open(self.pidfile, "w") as f:
                for pid in self.live:
                    f.write(f"{pid}\n")

    def start(self, name, argv, env=None, cwd=None):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(argv, env=full_env, cwd=cwd or self.workdir, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        self.live[p.pid] = (name, p)
        self._sync()
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10.0):
        if p is None or p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.live.pop(p.pid, None)
        self._sync()

    def stop_all(self):
        # newest first: kvq before the Redis it talks to, so its logs stay free of teardown noise
        for pid, (name, p) in reversed(list(self.live.items())):
            self.stop(p, timeout=5)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_mem(pid):
    """VmRSS and VmHWM in MiB from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    out[k] = round(int(v.split()[0]) / 1024, 2)
    except OSError:
        pass
    return out


def proc_cpu(pid):
    """utime + stime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class CpuWatch:
    """How much CPU processes the suite did not start used during a phase (a disturbed run)."""

    def __init__(self, procs):
        self.procs = procs
        self.t0 = time.monotonic()
        self.busy0 = self.busy()
        self.ours0 = self.ours()

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")

    def ours(self):
        t = os.times()
        return (t.user + t.system + t.children_user + t.children_system +
                sum(proc_cpu(pid) for pid in list(self.procs.live)))

    def result(self):
        secs = time.monotonic() - self.t0
        if secs <= 0:
            return {}
        busy, ours = self.busy() - self.busy0, self.ours() - self.ours0
        return {"machine_cores_busy": round(busy / secs, 2), "suite_cores_busy": round(ours / secs, 2),
                "foreign_cores_busy": round(max(0.0, busy - ours) / secs, 2)}


# ---------------------------------------------------------------- HTTP

class Http:
    """A keep-alive HTTP/1.1 client for polling (metrics, readiness)."""

    def __init__(self, base, timeout=3.0):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def metrics(self):
        """Parses the Prometheus text into {'name{labels}': value}."""
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def queue_depth(self):
        return int(self.metrics().get("kvq_queue_depth", -1))

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def wait_ready(url, timeout):
    """Polls /readyz until 200; returns seconds waited or raises."""
    h = Http(url, timeout=1.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if h.request("GET", "/readyz")[0] == 200:
                h.close()
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    h.close()
    raise RuntimeError(f"{url}/readyz not 200 within {timeout}s")


def first_ready_ms(port, started, timeout=10.0):
    """Tight poll of /readyz on a raw socket; ms from `started` (perf_counter) to the first 200."""
    req = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return (time.perf_counter() - started) * 1000
        except OSError:
            pass
        time.sleep(0.0005)
    return None


# ---------------------------------------------------------------- wrk

def run_wrk(url, script, conns, threads, duration, env=None, timeout_s=5):
    """Runs wrk with a bench/ Lua script for `duration` s; returns its figures (rates per second)."""
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", f"{timeout_s}s",
           "-s", os.path.join(BENCH_DIR, script), url]
    full_env = dict(os.environ, BENCH_DIR=BENCH_DIR)
    full_env.update(env or {})
    r = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=duration + 60)
    return parse_wrk(r.stdout, r.stderr)


def parse_wrk(stdout, stderr=""):
    m = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no figures:\n{stdout}\n{stderr}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    errors = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_timeout"]
    d["ok"] = d["requests"] - d["err_status"]
    d["rps"] = d["requests"] / secs if secs else 0.0
    d["ok_rps"] = d["ok"] / secs if secs else 0.0
    d["socket_errors"] = errors
    for p in ("p50", "p90", "p99", "p999", "max", "mean"):
        d[f"{p}_ms"] = round(d[f"{p}_us"] / 1000, 3)
    return d


class WrkBackground:
    """wrk running in the background (for paced steps and bursts); stop() sends SIGINT and parses."""

    def __init__(self, procs, url, script, conns, threads, duration, env):
        self.procs = procs
        full_env = dict(os.environ, BENCH_DIR=BENCH_DIR)
        full_env.update(env)
        self.out = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(
            ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", "5s",
             "-s", os.path.join(BENCH_DIR, script), url],
            env=full_env, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        procs.live[self.p.pid] = ("wrk", self.p)
        procs._sync()

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
        self.procs.live.pop(self.p.pid, None)
        self.procs._sync()
        self.out.seek(0)
        return parse_wrk(self.out.read())


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
    stamps = []
    for f in os.listdir(stampdir):
        with open(os.path.join(stampdir, f)) as fh:
            stamps.append(float(fh.read().split()[0]))
    figures = w.finish(interrupt=True)
    if len(stamps) < threads:
        raise RuntimeError(f"burst of {n} writes did not finish within {timeout}s")
    return figures, max(stamps)


# ---------------------------------------------------------------- redis

def redis_cli(port, *args, timeout=5):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout


def wait_redis(port, timeout=10):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if redis_cli(port, "PING").strip() == "PONG":
                return
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis on port {port} did not answer within {timeout}s")


def start_redis(procs, name, port, datadir, aof, extra=()):
    os.makedirs(datadir, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", datadir, "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec", "--daemonize", "no",
            "--logfile", ""] + list(extra)
    p = procs.start(name, argv)
    wait_redis(port)
    return p


def redis_benchmark(port, n):
    """The in-run ceiling: redis-benchmark -c 32 -t set,get (default 3-byte values, as in issue 5)."""
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "32", "-n", str(n),
                        "-t", "set,get", "-q", "--csv"], capture_output=True, text=True, timeout=300)
    out = {}
    for line in r.stdout.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols and cols[0] in ("SET", "GET"):
            out[cols[0]] = {"rps": float(cols[1]), "p50_ms": float(cols[4]), "p99_ms": float(cols[6])}
    if "SET" not in out or "GET" not in out:
        raise RuntimeError(f"could not parse redis-benchmark output:\n{r.stdout}\n{r.stderr}")
    return out


# ---------------------------------------------------------------- the suite

class Suite:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        q = self.quick
        self.p = {
            "rb_n": 20000 if q else 200000,
            "warm": 1 if q else 3,
            "dur": 3 if q else 15,
            "step": 4 if q else 30,
            "max_steps": 3 if q else 8,
            "burst": 10000 if q else 100000,
            "seed": 2000 if q else 10000,
            "startup_reps": 3 if q else 10,
            "drain_timeout": 60 if q else 240,
        }
        self.local = args.url is None
        self.workdir = tempfile.mkdtemp(prefix="kvq-bench-")
        self.stampdir = os.path.join(self.workdir, "stamps")
        os.makedirs(self.stampdir)
        self.procs = Procs(self.workdir)
        self.run_id = f"{int(time.time()) % 100000000:x}"
        self.results = {"figures": [], "raw": {}, "memory": {}, "notes": []}
        self.ref = None
        self.url = args.url
        self.server = None
        self.workers = []
        self.redis_port = None

    # -- figures

    def figure(self, key, label, value, unit, target=None, cmp=None, ref=None):
        """Records one table row; `target` is a number, `cmp` '>=' or '<=', `ref` 'SET'/'GET' for a ratio."""
        ratio = None
        if ref and self.ref and value is not None and not key.startswith("redis_"):
            ratio = value / self.ref[ref]["rps"]
        met = None
        if target is not None and value is not None:
            met = value >= target if cmp == ">=" else value <= target
        row = {"key": key, "figure": label, "value": value, "unit": unit,
               "target": f"{cmp} {target:g}" if target is not None else None,
               "met": met, "ratio_to_redis_benchmark": round(ratio, 4) if ratio is not None else None}
        self.results["figures"].append(row)
        v = "n/a" if value is None else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}")
        log(f"  {label}: {v} {unit}" + (f" (target {row['target']}: {'met' if met else 'NOT met'})" if met is not None else ""))

    def kvq_env(self, extra=None):
        env = {"KVQ__LOG__FORMAT": "json", "RUST_LOG": "warn"}
        if self.redis_port:
            env["KVQ__REDIS__URL"] = f"redis://127.0.0.1:{self.redis_port}"
        env.update(extra or {})
        return env

    def bin(self, name):
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        return os.path.join(target, "release", name)

    # -- processes

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
        note = f"queue not drained after {what} within {timeout}s (depth {depth})"
        self.results["notes"].append(note)
        log("WARNING " + note)
        return None

    # -- phases

    def setup_local(self):
        if not self.args.no_build:
            log("building release binaries (cargo build --release --bins)")
            subprocess.run(["cargo", "build", "--release", "--bins"], cwd=REPO, check=True, timeout=3600)
        self.redis_port = free_port()
        log(f"starting redis-server on 127.0.0.1:{self.redis_port} (AOF off, no RDB snapshots)")
        start_redis(self.procs, "redis", self.redis_port, os.path.join(self.workdir, "redis"), aof=False)
        log(f"redis-benchmark -c 32 -n {self.p['rb_n']} -t set,get")
        self.ref = redis_benchmark(self.redis_port, self.p["rb_n"])
        self.results["raw"]["redis_benchmark"] = self.ref
        self.figure("redis_set", "redis-benchmark SET (c=32), reference", self.ref["SET"]["rps"], "req/s", ref="SET")
        self.figure("redis_get", "redis-benchmark GET (c=32), reference", self.ref["GET"]["rps"], "req/s", ref="GET")
        self.server, self.url = self.start_server()
        self.workers = [self.start_worker(1)]
        time.sleep(1.0)
        self.memory("idle")
        mem = self.results["memory"]["idle"]
        self.figure("server_rss_idle", "server RSS idle", mem["server"].get("VmRSS"), "MiB", 10, "<=")
        self.figure("worker_rss_idle", "worker RSS idle", mem["worker"].get("VmRSS"), "MiB", 10, "<=")

    def phase_startup(self):
        log(f"phase 5: start-up, exec to first 200 of /readyz, {self.p['startup_reps']} runs each")
        for binary, key, bind_var in (("kvq-server", "server", "KVQ__SERVER__BIND"), ("kvq-worker", "worker", "KVQ__WORKER__BIND")):
            times = []
            for i in range(self.p["startup_reps"]):
                port = free_port()
                env = self.kvq_env({bind_var: f"127.0.0.1:{port}", "KVQ__WORKER__CONSUMER_NAME": "bench-startup"})
                t0 = time.perf_counter()
                p = self.procs.start(f"startup-{key}", [self.bin(binary)], env)
                ms = first_ready_ms(port, t0)
                self.procs.stop(p)
                if ms is not None:
                    times.append(ms)
                time.sleep(0.1)
            self.results["raw"][f"startup_{key}_ms"] = [round(t, 2) for t in times]
            med = statistics.median(times) if times else None
            self.figure(f"startup_{key}_ms", f"{key} exec to first 200 /readyz (median)", med, "ms", 50, "<=")

    def load(self, label, script, conns, env):
        threads = 1 if conns == 1 else 2
        run_wrk(self.url, script, conns, threads, self.p["warm"], {**env, "BENCH_PREFIX": env.get("BENCH_PREFIX", "") + "-warm"}
                if script == "write.lua" else env)
        watch = CpuWatch(self.procs)
        d = run_wrk(self.url, script, conns, threads, self.p["dur"], env)
        d["cpu"] = watch.result()
        self.results["raw"][label] = d
        self.check_disturbed(label, d["cpu"])
        if d["err_status"] or d["socket_errors"]:
            note = f"{label}: {d['err_status']} non-2xx answers, {d['socket_errors']} socket errors of {d['requests']}"
            self.results["notes"].append(note)
            log("WARNING " + note)
        return d

    def check_disturbed(self, label, cpu):
        if self.local and cpu.get("foreign_cores_busy", 0) > 0.3:
            note = (f"{label}: other processes used {cpu['foreign_cores_busy']} cores meanwhile; "
                    "its figures are disturbed")
            self.results["notes"].append(note)
            log("WARNING " + note)

    def phase_writes(self):
        log(f"phase 1: accepted writes, unique keys, 100-byte values ({self.p['warm']} s warm-up, {self.p['dur']} s)")
        for c in (1, 32):
            d = self.load(f"writes_c{c}", "write.lua", c, {"BENCH_PREFIX": f"w{self.run_id}c{c}"})
            tgt = (25000, ">=") if c == 32 else (None, None)
            self.figure(f"writes_c{c}_rps", f"writes accepted/s c={c}", d["ok_rps"], "req/s", *tgt, ref="SET")
            self.figure(f"writes_c{c}_p50", f"writes p50 c={c}", d["p50_ms"], "ms")
            self.figure(f"writes_c{c}_p99", f"writes p99 c={c}", d["p99_ms"], "ms", *((10, "<=") if c == 32 else (None, None)))
            self.figure(f"writes_c{c}_p999", f"writes p99.9 c={c}", d["p999_ms"], "ms")
        self.memory("after_writes")
        if self.local:
            # the API path alone: the same load with no worker competing for the cores
            for w in self.workers:
                self.procs.stop(w, timeout=15)
            d = self.load("writes_c32_no_worker", "write.lua", 32, {"BENCH_PREFIX": f"w{self.run_id}nw"})
            self.workers = [self.start_worker(1)]
            self.figure("writes_c32_no_worker_rps", "writes accepted/s c=32, worker stopped", d["ok_rps"], "req/s", ref="SET")
            self.figure("writes_c32_no_worker_p99", "writes p99 c=32, worker stopped", d["p99_ms"], "ms")
            m = self.results["memory"]["after_writes"]["server"]
            self.figure("server_rss_after_writes", "server RSS after writes", m.get("VmRSS"), "MiB", 40, "<=")
            self.figure("server_hwm_after_writes", "server VmHWM after writes", m.get("VmHWM"), "MiB", 40, "<=")
        log("  waiting for the worker to drain the write phase's backlog")
        waited = self.wait_drained("the write phase")
        self.results["raw"]["drain_after_writes_s"] = waited
        self.memory("after_writes_drained")

    def seed(self, prefix, n):
        """Writes keys PREFIX-0-1..PREFIX-0-n/2 and PREFIX-1-1.. (one connection per wrk thread: in order)."""
        figures, _ = burst(self.procs, self.url, n, 2, prefix, self.stampdir, timeout=120)
        self.wait_drained("seeding the read phase", timeout=120)
        return figures

    def phase_reads(self):
        n = self.p["seed"]
        prefix = f"r{self.run_id}"
        log(f"phase 2: reads of {n} existing keys")
        self.seed(prefix, n)
        for c in (1, 32):
            d = self.load(f"reads_c{c}", "read.lua", c, {"BENCH_PREFIX": prefix, "BENCH_KEYS": str(n // 2)})
            self.figure(f"reads_c{c}_rps", f"reads/s c={c}", d["ok_rps"], "req/s", *((35000, ">=") if c == 32 else (None, None)), ref="GET")
            self.figure(f"reads_c{c}_p50", f"reads p50 c={c}", d["p50_ms"], "ms")
            self.figure(f"reads_c{c}_p99", f"reads p99 c={c}", d["p99_ms"], "ms", *((5, "<=") if c == 32 else (None, None)))
            self.figure(f"reads_c{c}_p999", f"reads p99.9 c={c}", d["p999_ms"], "ms")
        self.memory("after_reads")

    def sample_depth(self, stop_event, samples, period):
        h = Http(self.url)
        t0 = time.monotonic()
        while not stop_event.is_set():
            try:
                samples.append((time.monotonic() - t0, h.queue_depth()))
            except (OSError, RuntimeError, http.client.HTTPException):
                pass
            stop_event.wait(period)
        h.close()

    def paced_step(self, target_rate, lat_ms, conns=32):
        """Offers about target_rate writes/s for one step and samples the queue depth meanwhile."""
        period_ms = conns * 1000.0 / target_rate
        delay = max(0.0, period_ms - lat_ms)
        env = {"BENCH_PREFIX": f"e{self.run_id}-{int(target_rate)}", "BENCH_DELAY_MS": f"{delay:.3f}"}
        samples, stop = [], threading.Event()
        t = threading.Thread(target=self.sample_depth, args=(stop, samples, 0.5 if self.quick else 1.0), daemon=True)
        t.start()
        watch = CpuWatch(self.procs)
        try:
            d = run_wrk(self.url, "write.lua", conns, 2, self.p["step"], env)
        finally:
            stop.set()
            t.join(timeout=10)
        d["cpu"] = watch.result()
        return d, delay, samples

    @staticmethod
    def slope(samples):
        if len(samples) < 3:
            return None
        xs, ys = [s[0] for s in samples], [s[1] for s in samples]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None

    def phase_sustained(self, guess):
        """Step the offered rate; a step passes when the queue depth does not grow."""
        log(f"phase 3a: highest sustained write rate (steps of {self.p['step']} s, depth sampled from /metrics)")
        steps = []
        lo = hi = None  # highest accepted rate that was sustained, lowest that was not
        rate = max(500.0, guess)
        lat_ms = 0.5
        for i in range(self.p["max_steps"]):
            self.wait_drained("the previous step", timeout=120)
            d, delay, samples = self.paced_step(rate, lat_ms)
            accepted = d["ok_rps"]
            skip = self.p["step"] * 0.2  # ignore the ramp
            tail = [s for s in samples if s[0] >= skip]
            sl = self.slope(tail)
            last_third = [s[1] for s in tail if s[0] >= self.p["step"] * 2 / 3]
            end_depth = max(last_third) if last_third else None
            ok = (sl is not None and end_depth is not None and
                  sl <= max(0.02 * accepted, 20) and end_depth <= max(2.0 * accepted, 500))
            retry = bool(steps and steps[-1].get("note", "").startswith("disturbed"))
            steps.append({"offered_target": round(rate), "delay_ms": round(delay, 3), "accepted_rps": round(accepted),
                          "p99_ms": d["p99_ms"], "depth_slope_per_s": round(sl, 1) if sl is not None else None,
                          "depth_end": end_depth, "sustained": ok, "cpu": d["cpu"], "retry_of": retry,
                          "depth_samples": [(round(a, 2), b) for a, b in samples]})
            log(f"  step {i + 1}: target {rate:,.0f}/s delay {delay:.2f} ms -> accepted {accepted:,.0f}/s, "
                f"depth slope {sl if sl is None else round(sl, 1)}/s, end depth {end_depth}: {'sustained' if ok else 'GROWS'}")
            self.check_disturbed(f"sustained step {i + 1}", d["cpu"])
            # calibrate the per-request latency so the next step lands closer to its target
            if accepted > 0:
                lat_ms = max(0.05, 32 * 1000.0 / accepted - delay)
            if ok:
                lo = max(lo or 0.0, accepted)
                if delay == 0:
                    steps[-1]["note"] = "closed loop: the server's accept ceiling is sustained"
                    break
            elif d["cpu"].get("foreign_cores_busy", 0) > 0.3 and not steps[-1].get("retry_of"):
                # a failure while something else loaded the machine says little: repeat the step once
                steps[-1]["note"] = "disturbed by other processes; repeated"
                continue
            else:
                hi = min(hi, accepted) if hi else accepted
            if lo and hi and hi <= lo * 1.08:
                break
            if hi is None:
                rate = lo * 1.3
            elif lo is None:
                rate = hi * 0.7
            else:
                rate = (lo + hi) / 2
        best = lo
        self.results["raw"]["sustained_steps"] = steps
        self.wait_drained("the sustained-rate steps", timeout=120)
        return best

    def phase_burst(self):
        n = self.p["burst"]
        log(f"phase 3b: burst of {n:,} writes (c=32) with the worker running; drain = last 202 -> depth 0")
        figures, last = burst(self.procs, self.url, n, 32, f"b{self.run_id}", self.stampdir, timeout=300)
        h = Http(self.url)
        t_end = None
        deadline = time.monotonic() + self.p["drain_timeout"]
        depth_at_last = None
        while time.monotonic() < deadline:
            depth = h.queue_depth()
            if depth_at_last is None:
                depth_at_last = depth
            if depth == 0:
                t_end = time.time()
                break
            time.sleep(0.02)
        h.close()
        drain = max(0.0, t_end - last) if t_end else None
        self.results["raw"]["burst"] = {"writes": figures["ok"], "non_2xx": figures["err_status"],
                                        "depth_when_last_answered": depth_at_last, "drain_s": drain}
        self.figure("burst_drain_s", f"drain time after a {n // 1000}k burst (last 202 -> depth 0)", drain, "s")
        self.memory("after_burst")

    def apply_rate(self, nworkers):
        """Preloads a backlog with no worker running, then times N workers draining it."""
        n = self.p["burst"]
        self.wait_drained("the previous phase", timeout=120)
        for w in self.workers:
            self.procs.stop(w, timeout=15)
        self.workers = []
        figures, _ = burst(self.procs, self.url, n, 32, f"a{self.run_id}n{nworkers}", self.stampdir, timeout=300)
        h = Http(self.url)
        backlog = h.queue_depth()
        t0 = time.monotonic()
        workers = [self.start_worker(i + 1) for i in range(nworkers)]
        samples = []
        deadline = t0 + self.p["drain_timeout"]
        while time.monotonic() < deadline:
            depth = h.queue_depth()
            samples.append((time.monotonic() - t0, depth))
            if depth == 0:
                break
            time.sleep(0.1)
        h.close()
        mems = [proc_mem(w.pid) for w in workers]
        for w in workers[1:]:
            self.procs.stop(w, timeout=15)
        self.workers = workers[:1]
        # rate between 90% and 10% of the backlog: excludes start-up and the tail
        a = next((s for s in samples if s[1] <= 0.9 * backlog), None)
        b = next((s for s in samples if s[1] <= 0.1 * backlog), None)
        rate = (a[1] - b[1]) / (b[0] - a[0]) if a and b and b[0] > a[0] else None
        total = samples[-1][0] if samples and samples[-1][1] == 0 else None
        self.results["raw"][f"apply_{nworkers}w"] = {"backlog": backlog, "drain_s": total, "rate": rate,
                                                     "worker_mem": mems, "samples": samples[::5]}
        return rate

    def phase_e2e(self):
        apply1 = apply4 = None
        if self.local:
            log(f"phase 3c: worker apply rate, backlog of {self.p['burst']:,} writes, 1 and 4 workers (concurrency 16 each)")
            apply1 = self.apply_rate(1)
            self.figure("apply_rate_1w", "worker apply rate, 1 worker", apply1, "tasks/s", ref="SET")
            self.memory("after_apply_1w")
            apply4 = self.apply_rate(4)
            self.figure("apply_rate_4w", "worker apply rate, 4 workers", apply4, "tasks/s", ref="SET")
        best = self.phase_sustained(0.7 * apply1 if apply1 else 4000)
        self.figure("sustained_rps", "sustained e2e writes/s (accept = apply), 1 worker", best, "req/s", 10000, ">=", ref="SET")
        self.memory("after_sustained")
        self.phase_burst()

    def phase_sentinel(self):
        log("phase 6: sentinel mode, MIN_REPLICAS_ACK=1 (1 master + 2 replicas, 3 sentinels, AOF everysec)")
        # free the CPU of the standalone processes
        for w in self.workers:
            self.procs.stop(w)
        self.procs.stop(self.server)
        self.workers, self.server = [], None
        base = os.path.join(self.workdir, "sentinel")
        ports = [free_port() for _ in range(3)]
        sports = [free_port() for _ in range(3)]
        start_redis(self.procs, "sent-master", ports[0], os.path.join(base, "m"), aof=True)
        for i in (1, 2):
            start_redis(self.procs, f"sent-replica{i}", ports[i], os.path.join(base, f"r{i}"), aof=True,
                        extra=["--replicaof", "127.0.0.1", str(ports[0])])
        for i, sp in enumerate(sports):
            conf = os.path.join(base, f"sentinel{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {sp}\nbind 127.0.0.1\ndaemonize no\ndir {base}\n"
                        f"sentinel monitor mymaster 127.0.0.1 {ports[0]} 2\n"
                        "sentinel down-after-milliseconds mymaster 5000\nsentinel failover-timeout mymaster 60000\n")
            self.procs.start(f"sentinel{i}", ["redis-sentinel", conf])
        t0 = time.monotonic()
        ready = False
        while time.monotonic() - t0 < 30:
            info = redis_cli(ports[0], "INFO", "replication")
            online = info.count("state=online")
            known = all(redis_cli(sp, "SENTINEL", "get-master-addr-by-name", "mymaster").split()[1:2] == [str(ports[0])]
                        for sp in sports)
            if online == 2 and known:
                ready = True
                break
            time.sleep(0.2)
        if not ready:
            raise RuntimeError("sentinel setup did not converge within 30 s")
        env = {"KVQ__REDIS__MODE": "sentinel", "KVQ__REDIS__SENTINELS": ",".join(f"127.0.0.1:{p}" for p in sports),
               "KVQ__REDIS__MASTER_NAME": "mymaster", "KVQ__REDIS__MIN_REPLICAS_ACK": "1"}
        saved = self.redis_port
        self.redis_port = None
        self.server, self.url = self.start_server(env, name="kvq-server-sentinel")
        self.workers = [self.start_worker(1, env)]
        self.redis_port = saved
        for c in (1, 32):
            d = self.load(f"sentinel_writes_c{c}", "write.lua", c, {"BENCH_PREFIX": f"s{self.run_id}c{c}"})
            tgt = {}
            self.figure(f"sentinel_writes_c{c}_rps", f"sentinel+WAIT 1: writes accepted/s c={c}", d["ok_rps"], "req/s", ref="SET", **tgt)
            self.figure(f"sentinel_writes_c{c}_p99", f"sentinel+WAIT 1: writes p99 c={c}", d["p99_ms"], "ms")
        self.memory("after_sentinel")

    # -- main

    def run(self):
        started = time.time()
        try:
            if self.local:
                self.setup_local()
                if not self.args.only or "startup" in self.args.only.split(","):
                    self.phase_startup()
            else:
                if self.args.ref_redis:
                    host, port = self.args.ref_redis.rsplit(":", 1)
                    if host not in ("127.0.0.1", "localhost"):
                        raise SystemExit("--ref-redis must be on loopback")
                    self.ref = redis_benchmark(int(port), self.p["rb_n"])
                    self.results["raw"]["redis_benchmark"] = self.ref
                wait_ready(self.url, 30)
            only = set(self.args.only.split(",")) if self.args.only else None
            want = lambda name: only is None or name in only
            if want("writes"):
                self.phase_writes()
            if want("reads"):
                self.phase_reads()
            if want("e2e"):
                self.phase_e2e()
            if self.local and not self.args.skip_sentinel and want("sentinel"):
                self.phase_sentinel()
        except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as e:
            # report what was measured so far, and why the run stopped
            dead = [f"{name} (pid {pid}) exited with {p.returncode}"
                    for pid, (name, p) in self.procs.live.items() if p.poll() is not None]
            self.results["error"] = f"{type(e).__name__}: {e}" + (f"; {', '.join(dead)}" if dead else "")
            self.results["notes"].append("run stopped early: " + self.results["error"])
            log("ERROR " + self.results["error"])
        finally:
            self.procs.stop_all()
            self.collect_log_warnings()
        self.results["meta"] = self.meta(started)
        return self.results

    def collect_log_warnings(self):
        counts = {}
        for f in os.listdir(self.workdir):
            if f.startswith("kvq-") and f.endswith(".log"):
                with open(os.path.join(self.workdir, f), errors="replace") as fh:
                    n = sum(1 for line in fh if '"level":"WARN"' in line or '"level":"ERROR"' in line)
                if n:
                    counts[f] = n
        if counts:
            self.results["notes"].append(f"warnings/errors logged by kvq: {counts} (logs in {self.workdir})")

    def meta(self, started):
        def out(cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
            except (OSError, subprocess.TimeoutExpired):
                return None
        cpu = None
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
        except OSError:
            pass
        return {
            "command": "bash bench/run.sh " + " ".join(sys.argv[1:]),
            "mode": "url" if self.args.url else "local",
            "target": self.url if self.args.url else "local processes",
            "quick": self.quick,
            "params": self.p,
            "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
            "duration_s": round(time.time() - started, 1),
            "git_commit": out(["git", "rev-parse", "--short", "HEAD"]) or os.environ.get("BENCH_GIT_COMMIT"),
            "git_dirty": bool(out(["git", "status", "--porcelain", "--", "src", "Cargo.toml"])),
            "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "redis": out(["redis-server", "--version"]), "wrk": out(["sh", "-c", "wrk -v 2>&1 | head -1"]),
            "redis_persistence": "standalone phases: AOF off, RDB off; sentinel phase: AOF everysec",
        }


def print_table(results):
    rows = [("figure", "value", "unit", "target", "ratio", "met")]
    for f in results["figures"]:
        v = f["value"]
        vs = "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")
        r = f["ratio_to_redis_benchmark"]
        rows.append((f["figure"], vs, f["unit"], f["target"] or "", f"{r:.3f}" if r is not None else "",
                     "" if f["met"] is None else ("yes" if f["met"] else "NO")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(widths[i]) if i in (0, 2, 3) else c.rjust(widths[i]) for i, c in enumerate(r)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    for n in results["notes"]:
        print(f"note: {n}")


def main():
    ap = argparse.ArgumentParser(description="kvq benchmark suite (see bench/README.md)")
    ap.add_argument("--url", help="run only the load phases against a deployed kvq-server (http://host:port)")
    ap.add_argument("--quick", action="store_true", help="a few seconds per phase: a smoke test")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--skip-sentinel", action="store_true", help="leave out phase 6")
    ap.add_argument("--only", help="comma-separated subset of phases: startup,writes,reads,e2e,sentinel "
                    "(redis-benchmark and the idle memory snapshot always run in local mode)")
    ap.add_argument("--ref-redis", help="with --url: a loopback host:port to run redis-benchmark against for ratios")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "results"), help="folder for the JSON result")
    args = ap.parse_args()
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        if u.scheme != "http" or not u.hostname:
            ap.error("--url must look like http://host:port")
    for tool in ("wrk",) + (() if args.url else ("redis-server", "redis-sentinel", "redis-cli", "redis-benchmark")):
        if not shutil.which(tool):
            ap.error(f"{tool} is not installed (bench/run.sh installs it)")

    suite = Suite(args)
    # SIGTERM/SIGINT: unwind through the finally blocks so every started process is stopped.
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = suite.run()
    except KeyboardInterrupt:
        log("interrupted; processes stopped")
        return 130
    finally:
        suite.procs.stop_all()
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(args.out, f"{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print()
    print_table(results)
    print(f"\nresults: {os.path.relpath(path, REPO)}")
    if results.get("error"):
        print(f"logs kept in {suite.workdir}")
        return 1
    if results["notes"]:
        print(f"logs kept in {suite.workdir}")
    else:
        shutil.rmtree(suite.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

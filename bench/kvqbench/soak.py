"""Phase 7, soak: sustained overwrites of a fixed key set against a Redis with `maxmemory`,
sampling Redis memory, accepted writes per second and the write p99 every second. The memory
curve must flatten: kvq's Redis memory is bounded by the live data, the backlog and the
bookkeeping budget, not by how many writes were made."""

import csv
import json
import os
import subprocess
import sys
import time

from . import REPO, log
from .http import Http
from .procs import free_port
from .redis import redis_cli, start_redis
from .wrk import WrkBackground

PUT = 'method="PUT",route="/v1/keys/{key}"'
MAXMEMORY_MB = 48
KEYS_PER_THREAD = 50  # two wrk threads: 100 keys


def used_memory(port):
    for line in redis_cli(port, "INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return None


def put_counts(metrics):
    """(2xx answers, other answers, {le: cumulative count}) of PUT /v1/keys/{key} so far."""
    ok = bad = 0
    buckets = {}
    for k, v in metrics.items():
        if k.startswith("kvq_http_requests_total{") and PUT in k:
            status = k.split('status="')[1].split('"')[0]
            if status.startswith("2"):
                ok += v
            else:
                bad += v
        elif k.startswith("kvq_http_request_duration_seconds_bucket{") and PUT in k:
            le = k.split('le="')[1].split('"')[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = v
    return ok, bad, buckets


def p99_ms(before, after):
    """The upper bound (ms) of the histogram bucket holding the 99th percentile of the answers between two scrapes."""
    les = sorted(after)
    total = after[les[-1]] - before.get(les[-1], 0) if les else 0
    if total <= 0:
        return None
    for le in les:
        if after[le] - before.get(le, 0) >= 0.99 * total:
            return None if le == float("inf") else le * 1000
    return None


def capped_stack(ctx, name):
    """A Redis of its own capped at MAXMEMORY_MB (noeviction, as the chart configures it), with a
    kvq-server and a kvq-worker on it: (redis port, server process, server URL, worker)."""
    port = free_port()
    start_redis(ctx.procs, f"{name}-redis", port, os.path.join(ctx.workdir, f"{name}-redis"), aof=False,
                extra=["--maxmemory", f"{MAXMEMORY_MB}mb", "--maxmemory-policy", "noeviction"])
    redis_env = {"KVQ__REDIS__URL": f"redis://127.0.0.1:{port}"}
    server, url = ctx.start_server(redis_env, name=f"{name}-server")
    worker = ctx.start_worker(name, redis_env)
    return port, server, url, worker


def soak(ctx):
    seconds = ctx.args.soak or ctx.p["soak"]
    log(f"phase 7: soak, {seconds} s of overwrites of {2 * KEYS_PER_THREAD} keys, Redis maxmemory {MAXMEMORY_MB} MB")
    port, server, url, worker = capped_stack(ctx, "soak")
    h = Http(url)
    series = []
    try:
        load = WrkBackground(ctx.procs, url, "write.lua", 16, 2, seconds,
                             {"BENCH_PREFIX": f"soak{ctx.run_id}", "BENCH_KEYS": str(KEYS_PER_THREAD)})
        t0 = time.monotonic()
        prev = put_counts(h.metrics())
        while load.running() and time.monotonic() - t0 < seconds + 10:
            time.sleep(1.0)
            now = put_counts(h.metrics())
            series.append({"t": round(time.monotonic() - t0, 2), "used_memory": used_memory(port),
                           "writes_per_s": now[0] - prev[0], "errors_per_s": now[1] - prev[1],
                           "p99_ms": p99_ms(prev[2], now[2])})
            prev = now
        d = load.finish(interrupt=True)
    finally:
        h.close()
        ctx.procs.stop(worker)
        ctx.procs.stop(server)
    ctx.results["raw"]["soak"] = {"wrk": d, "series": series}
    mem = [s["used_memory"] for s in series if s["used_memory"]]
    if not mem:
        ctx.problem("soak: no memory samples")
        return
    half = mem[len(mem) // 2:]
    ctx.figure("soak_writes", "soak: writes accepted", d["requests"] - d["err_status"], "req")
    ctx.figure("soak_errors", "soak: failed writes (non-2xx)", d["err_status"] + d["socket_errors"], "req", 0, "<=")
    ctx.figure("soak_mem_max", "soak: Redis used memory, max", round(max(mem) / 2**20, 2), "MiB", MAXMEMORY_MB * 0.9, "<=")
    ctx.figure("soak_mem_growth_2nd_half", "soak: Redis memory growth over the second half",
               round((max(half) - half[0]) / 2**20, 2), "MiB")
    if d["err_status"] or d["socket_errors"]:
        ctx.problem(f"soak: {d['err_status']} non-2xx answers, {d['socket_errors']} socket errors")
    # a smoke run keeps its files in the run's temporary folder, like its JSON
    out = ctx.workdir if ctx.smoke else ctx.args.out or os.path.join(REPO, "bench", "results")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"soak-{ctx.run_id}.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(series[0]))
        w.writeheader()
        w.writerows(series)
    log(f"  soak series: {path}")
    plot(ctx, path)


def plot(ctx, csv_path):
    """Draws the series with bench/plot_soak.py (matplotlib) when a Python with matplotlib is at hand
    ($BENCH_PLOT_PYTHON, else this one)."""
    py = os.environ.get("BENCH_PLOT_PYTHON", sys.executable)
    png = csv_path[:-4] + ".png"
    r = subprocess.run([py, os.path.join(REPO, "bench", "plot_soak.py"), csv_path, png],
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        log(f"  soak plot: {png}")
        ctx.results["raw"]["soak"]["plot"] = png
    else:
        ctx.note(f"soak: no plot ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}); "
                 "set BENCH_PLOT_PYTHON to a Python with matplotlib")



def just_accepted_task_is_readable(url):
    """PUTs one key and reads its task back at once: the newest tasks survive any write history."""
    h = Http(url)
    status, body = h.request("PUT", "/v1/keys/bounded-last", body=b'{"value":"v"}',
                             headers={"Content-Type": "application/json"})
    if status != 202:
        log(f"  the last PUT answered {status}: {body[:200]!r}")
        return False
    status, body = h.request("GET", f"/v1/tasks/{json.loads(body)['task_id']}")
    log(f"  a task accepted a moment ago reads back: {status}")
    return status == 200


def bounded(ctx):
    """Phase 8: the bounded-memory check with default settings: a Redis capped at 48 MB holding 100
    small keys takes 300,000 overwrites, 100,000 create+delete pairs of unique keys and 100,000
    writes with unique Idempotency-Keys (a tenth in --quick, a hundredth in --smoke) without a
    failed request, and stays under 44 MB."""
    scale = 0.01 if ctx.smoke else 0.1 if ctx.quick else 1
    log(f"phase 8: bounded memory, Redis maxmemory {MAXMEMORY_MB} MB, default settings (scale {scale})")
    port, server, url, worker = capped_stack(ctx, "bounded")
    peak, failed, sent = 0, 0, {}
    try:
        for mode, requests in (("overwrite", 300_000), ("churn", 200_000), ("idem", 100_000)):
            n = int(requests * scale)
            for f in os.listdir(ctx.stampdir):
                os.unlink(os.path.join(ctx.stampdir, f))
            load = WrkBackground(ctx.procs, url, "churn.lua", 16, 2, 3600,
                                 {"BENCH_PREFIX": f"b{ctx.run_id}{mode[0]}", "BENCH_MODE": mode,
                                  "BENCH_LIMIT": str(n // 2), "BENCH_STAMP_DIR": ctx.stampdir})
            while load.running() and len(os.listdir(ctx.stampdir)) < 2:
                peak = max(peak, used_memory(port) or 0)
                time.sleep(0.2)
            d = load.finish(interrupt=True)
            failed += d["err_status"] + d["socket_errors"]
            sent[mode] = d["requests"]
            peak = max(peak, used_memory(port) or 0)
            log(f"  {mode}: {d['requests']} requests, {d['err_status']} non-2xx, {d['socket_errors']} socket errors; "
                f"Redis used memory {used_memory(port) / 2**20:.1f} MiB, peak so far {peak / 2**20:.1f} MiB")
        end = used_memory(port)
        readable = just_accepted_task_is_readable(url)
    finally:
        ctx.procs.stop(worker)
        ctx.procs.stop(server)
    ctx.results["raw"]["bounded"] = {"requests": sent, "peak_bytes": peak, "end_bytes": end}
    if not readable:
        ctx.problem("bounded: a task accepted a moment ago is not readable")
    ctx.figure("bounded_failed", "bounded: failed requests", failed, "req", 0, "<=")
    ctx.figure("bounded_peak_mb", "bounded: Redis used memory, peak", round(peak / 10**6, 2), "MB", 44, "<=")
    if failed:
        ctx.problem(f"bounded: {failed} failed requests")

"""The phases of bench/README.md, each a function of the shared Context."""

import hashlib
import http.client
import os
import secrets
import subprocess
import threading
import time

from . import REPO, log
from .figures import (apply_rate, calibrated_latency_ms, drain_time, median_or_none, next_rate,
                      pacing_delay_ms, search_done, step_verdict)
from .http import Http, first_ready_ms, wait_ready
from .procs import CpuWatch, free_port, proc_mem
from .figures import balance, cpu_us_per_write
from .redis import (count_keys, make_certs, redis_benchmark, redis_counters, start_cluster, start_redis,
                    start_sentinel_set, start_tls_redis, top_commands)
from .soak import bounded, soak
from .wrk import burst, run_wrk


def setup_local(ctx):
    """Builds (unless --no-build), starts Redis, measures the redis-benchmark reference, starts kvq."""
    if not ctx.args.no_build:
        log("building release binaries (cargo build --release --bins)")
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=REPO, check=True, timeout=3600)
    ctx.redis_port = free_port()
    log(f"starting redis-server on 127.0.0.1:{ctx.redis_port} (AOF off, no RDB snapshots)")
    start_redis(ctx.procs, "redis", ctx.redis_port, os.path.join(ctx.workdir, "redis"), aof=False)
    log(f"redis-benchmark -c 32 -n {ctx.p['rb_n']} -t set,get")
    ctx.ref = redis_benchmark(ctx.redis_port, ctx.p["rb_n"])
    ctx.results["raw"]["redis_benchmark"] = ctx.ref
    ctx.figure("redis_set", "redis-benchmark SET (c=32), reference", ctx.ref["SET"]["rps"], "req/s", ref="SET")
    ctx.figure("redis_get", "redis-benchmark GET (c=32), reference", ctx.ref["GET"]["rps"], "req/s", ref="GET")
    ctx.server, ctx.url = ctx.start_server()
    ctx.workers = [ctx.start_worker(1)]
    time.sleep(1.0)
    ctx.memory("idle")
    mem = ctx.results["memory"]["idle"]
    ctx.figure("server_rss_idle", "server RSS idle", mem["server"].get("VmRSS"), "MiB", 10, "<=")
    ctx.figure("worker_rss_idle", "worker RSS idle", mem["worker"].get("VmRSS"), "MiB", 10, "<=")


def setup_url(ctx):
    """--url: optionally the redis-benchmark reference against a loopback Redis, then wait for kvq."""
    if ctx.args.ref_redis:
        host, port = ctx.args.ref_redis.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit("--ref-redis must be on loopback")
        ctx.ref = redis_benchmark(int(port), ctx.p["rb_n"])
        ctx.results["raw"]["redis_benchmark"] = ctx.ref
    wait_ready(ctx.url, 30)


def startup(ctx):
    log(f"phase 5: start-up, exec to first 200 of /readyz, {ctx.p['startup_reps']} runs each")
    for binary, key, bind_var in (("kvq-server", "server", "KVQ__SERVER__BIND"), ("kvq-worker", "worker", "KVQ__WORKER__BIND")):
        times = []
        for _ in range(ctx.p["startup_reps"]):
            port = free_port()
            env = ctx.kvq_env({bind_var: f"127.0.0.1:{port}", "KVQ__WORKER__CONSUMER_NAME": "bench-startup"})
            t0 = time.perf_counter()
            p = ctx.procs.start(f"startup-{key}", [ctx.bin(binary)], env)
            ms = first_ready_ms(port, t0)
            ctx.procs.stop(p)
            if ms is not None:
                times.append(ms)
            time.sleep(0.1)
        ctx.results["raw"][f"startup_{key}_ms"] = [round(t, 2) for t in times]
        ctx.figure(f"startup_{key}_ms", f"{key} exec to first 200 /readyz (median)", median_or_none(times), "ms", 50, "<=")


def writes(ctx):
    log(f"phase 1: accepted writes, unique keys, 100-byte values ({ctx.p['warm']} s warm-up, {ctx.p['dur']} s)")
    for c in (1, 32):
        d = ctx.load(f"writes_c{c}", "write.lua", c, {"BENCH_PREFIX": f"w{ctx.run_id}c{c}"})
        ctx.figure(f"writes_c{c}_rps", f"writes accepted/s c={c}", d["ok_rps"], "req/s", ref="SET",
                   ratio_target=0.25 if c == 32 else None)
        ctx.figure(f"writes_c{c}_p50", f"writes p50 c={c}", d["p50_ms"], "ms")
        ctx.figure(f"writes_c{c}_p99", f"writes p99 c={c}", d["p99_ms"], "ms", *((10, "<=") if c == 32 else (None, None)))
        ctx.figure(f"writes_c{c}_p999", f"writes p99.9 c={c}", d["p999_ms"], "ms")
    ctx.memory("after_writes")
    if ctx.local:
        # the API path alone: the same load with no worker competing for the cores
        ctx.stop_workers()
        d = ctx.load("writes_c32_no_worker", "write.lua", 32, {"BENCH_PREFIX": f"w{ctx.run_id}nw"})
        ctx.workers = [ctx.start_worker(1)]
        ctx.figure("writes_c32_no_worker_rps", "writes accepted/s c=32, worker stopped", d["ok_rps"], "req/s", ref="SET")
        ctx.figure("writes_c32_no_worker_p99", "writes p99 c=32, worker stopped", d["p99_ms"], "ms")
        m = ctx.results["memory"]["after_writes"]["server"]
        ctx.figure("server_rss_after_writes", "server RSS after writes", m.get("VmRSS"), "MiB", 40, "<=")
        ctx.figure("server_hwm_after_writes", "server VmHWM after writes", m.get("VmHWM"), "MiB", 40, "<=")
    log("  waiting for the worker to drain the write phase's backlog")
    waited = ctx.wait_drained("the write phase")
    ctx.results["raw"]["drain_after_writes_s"] = waited
    ctx.memory("after_writes_drained")


def seed(ctx, prefix, n):
    """Writes keys PREFIX-0-1..PREFIX-0-n/2 and PREFIX-1-1.. (one connection per wrk thread: in order)."""
    figures, _ = burst(ctx.procs, ctx.url, n, 2, prefix, ctx.stampdir, timeout=120)
    ctx.wait_drained("seeding the read phase", timeout=120)
    return figures


def reads(ctx):
    n = ctx.p["seed"]
    prefix = f"r{ctx.run_id}"
    log(f"phase 2: reads of {n} existing keys")
    seed(ctx, prefix, n)
    for c in (1, 32):
        d = ctx.load(f"reads_c{c}", "read.lua", c, {"BENCH_PREFIX": prefix, "BENCH_KEYS": str(n // 2)})
        ctx.figure(f"reads_c{c}_rps", f"reads/s c={c}", d["ok_rps"], "req/s", *((35000, ">=") if c == 32 else (None, None)), ref="GET")
        ctx.figure(f"reads_c{c}_p50", f"reads p50 c={c}", d["p50_ms"], "ms")
        ctx.figure(f"reads_c{c}_p99", f"reads p99 c={c}", d["p99_ms"], "ms", *((5, "<=") if c == 32 else (None, None)))
        ctx.figure(f"reads_c{c}_p999", f"reads p99.9 c={c}", d["p999_ms"], "ms")
    ctx.memory("after_reads")


# ---------------------------------------------------------------- phase 9: cost of authentication

AUTH_ENTRIES = 100


def write_token_file(path, token, entries=AUTH_ENTRIES):
    """A tokens file of `entries` clients (read and write), `token`'s entry last: the server
    compares a token with every entry, so the file's length is part of the cost."""
    lines = ["tokens:"]
    for i in range(entries - 1):
        lines += [f"  - name: bench-{i}", f"    sha256: {hashlib.sha256(secrets.token_bytes(32)).hexdigest()}",
                  "    scopes: [read, write]"]
    lines += ["  - name: bench", f"    sha256: {hashlib.sha256(token.encode()).hexdigest()}", "    scopes: [read, write]"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def auth(ctx):
    """Writes and reads at c=32 against two servers on the same Redis and worker, one without
    authentication and one with tokens, measured one after the other in the same run."""
    n = ctx.p["seed"]
    prefix = f"a{ctx.run_id}"
    log(f"phase 9: cost of authentication, writes and reads c=32 with and without a token ({AUTH_ENTRIES} entries)")
    token = secrets.token_hex(32)
    path = os.path.join(ctx.workdir, "tokens.yaml")
    write_token_file(path, token)
    server, url = ctx.start_server({"KVQ__AUTH__MODE": "tokens", "KVQ__AUTH__TOKENS_FILE": path},
                                   name="kvq-server-auth")
    try:
        seed(ctx, prefix, n)
        runs = {
            "writes": ("write.lua", lambda mode: {"BENCH_PREFIX": f"{prefix}w{mode}"}),
            "reads": ("read.lua", lambda mode: {"BENCH_PREFIX": prefix, "BENCH_KEYS": str(n // 2)}),
        }
        for what, (script, env) in runs.items():
            rps = {}
            for mode, target, extra in (("none", ctx.url, {}), ("tokens", url, {"BENCH_TOKEN": token})):
                d = ctx.load(f"auth_{what}_{mode}", script, 32, {**env(mode), **extra}, url=target)
                rps[mode] = d["ok_rps"]
                label = "without auth" if mode == "none" else "with a token"
                ctx.figure(f"auth_{what}_{mode}_rps", f"{what}/s c=32 {label}", d["ok_rps"], "req/s",
                           ref="SET" if what == "writes" else "GET")
                ctx.figure(f"auth_{what}_{mode}_p99", f"{what} p99 c=32 {label}", d["p99_ms"], "ms")
            cost = (1 - rps["tokens"] / rps["none"]) * 100 if rps["none"] and rps["tokens"] is not None else None
            ctx.figure(f"auth_{what}_cost_pct", f"{what}: throughput lost to authentication", cost, "%")
        ctx.wait_drained("the authentication phase")
    finally:
        ctx.procs.stop(server)


# ---------------------------------------------------------------- phase 3: end to end

def sample_depth(url, stop_event, samples, period):
    """Appends (seconds, kvq_queue_depth) every `period` s until stop_event is set."""
    h = Http(url)
    t0 = time.monotonic()
    while not stop_event.is_set():
        try:
            samples.append((time.monotonic() - t0, h.queue_depth()))
        except (OSError, RuntimeError, http.client.HTTPException):
            pass
        stop_event.wait(period)
    h.close()


def paced_step(ctx, target_rate, lat_ms, conns=32):
    """Offers about target_rate writes/s for one step and samples the queue depth meanwhile."""
    delay = pacing_delay_ms(target_rate, lat_ms, conns)
    env = {"BENCH_PREFIX": f"e{ctx.run_id}-{int(target_rate)}", "BENCH_DELAY_MS": f"{delay:.3f}"}
    period = 0.25 if ctx.smoke else 0.5 if ctx.quick else 1.0
    samples, stop = [], threading.Event()
    t = threading.Thread(target=sample_depth, args=(ctx.url, stop, samples, period), daemon=True)
    t.start()
    watch = CpuWatch(ctx.procs)
    try:
        d = run_wrk(ctx.url, "write.lua", conns, 2, ctx.p["step"], env)
    finally:
        stop.set()
        t.join(timeout=10)
    d["cpu"] = watch.result()
    return d, delay, samples


def sustained(ctx, guess, raw_key="sustained_steps"):
    """Step the offered rate; a step passes when the queue depth does not grow. The steps go to
    results raw[raw_key]."""
    log(f"phase 3a: highest sustained write rate (steps of {ctx.p['step']} s, depth sampled from /metrics)")
    steps = []
    lo = hi = None  # highest accepted rate that was sustained, lowest that was not
    rate = max(500.0, guess)
    lat_ms = 0.5
    for i in range(ctx.p["max_steps"]):
        ctx.wait_drained("the previous step", timeout=120)
        d, delay, samples = paced_step(ctx, rate, lat_ms)
        accepted = d["ok_rps"]
        sl, end_depth, ok = step_verdict(samples, ctx.p["step"], accepted)
        retry = bool(steps and steps[-1].get("note", "").startswith("disturbed"))
        steps.append({"offered_target": round(rate), "delay_ms": round(delay, 3), "accepted_rps": round(accepted),
                      "p99_ms": d["p99_ms"], "depth_slope_per_s": round(sl, 1) if sl is not None else None,
                      "depth_end": end_depth, "sustained": ok, "cpu": d["cpu"], "retry_of": retry,
                      "depth_samples": [(round(a, 2), b) for a, b in samples]})
        log(f"  step {i + 1}: target {rate:,.0f}/s delay {delay:.2f} ms -> accepted {accepted:,.0f}/s, "
            f"depth slope {sl if sl is None else round(sl, 1)}/s, end depth {end_depth}: {'sustained' if ok else 'GROWS'}")
        ctx.check_disturbed(f"sustained step {i + 1}", d["cpu"])
        if d["err_status"] or d["socket_errors"]:
            ctx.problem(f"sustained step {i + 1}: {d['err_status']} non-2xx answers, "
                        f"{d['socket_errors']} socket errors of {d['requests']}")
        # calibrate the per-request latency so the next step lands closer to its target
        if accepted > 0:
            lat_ms = calibrated_latency_ms(accepted, delay, 32)
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
        if search_done(lo, hi):
            break
        rate = next_rate(lo, hi)
    ctx.results["raw"][raw_key] = steps
    ctx.wait_drained("the sustained-rate steps", timeout=120)
    return lo


def burst_drain(ctx):
    n = ctx.p["burst"]
    log(f"phase 3b: burst of {n:,} writes (c=32) with the worker running; drain = last 202 -> depth 0")
    figures, last = burst(ctx.procs, ctx.url, n, 32, f"b{ctx.run_id}", ctx.stampdir, timeout=300)
    h = Http(ctx.url)
    t_end = None
    deadline = time.monotonic() + ctx.p["drain_timeout"]
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
    ctx.results["raw"]["burst"] = {"writes": figures["ok"], "non_2xx": figures["err_status"],
                                   "depth_when_last_answered": depth_at_last, "drain_s": drain}
    ctx.figure("burst_drain_s", f"drain time after a {n // 1000}k burst (last 202 -> depth 0)", drain, "s")
    ctx.memory("after_burst")


def measure_apply_rate(ctx, nworkers):
    """Preloads a backlog with no worker running, then times N workers draining it."""
    n = ctx.p["burst"]
    ctx.wait_drained("the previous phase", timeout=120)
    ctx.stop_workers()
    burst(ctx.procs, ctx.url, n, 32, f"a{ctx.run_id}n{nworkers}", ctx.stampdir, timeout=300)
    h = Http(ctx.url)
    backlog = h.queue_depth()
    t0 = time.monotonic()
    workers = [ctx.start_worker(i + 1) for i in range(nworkers)]
    samples = []
    deadline = t0 + ctx.p["drain_timeout"]
    # a smoke run's backlog drains within a second: sample often enough to see 90 % and 10 % of it
    period = 0.01 if ctx.smoke else 0.1
    while time.monotonic() < deadline:
        depth = h.queue_depth()
        samples.append((time.monotonic() - t0, depth))
        if depth == 0:
            break
        time.sleep(period)
    h.close()
    mems = [proc_mem(w.pid) for w in workers]
    for w in workers[1:]:
        ctx.procs.stop(w, timeout=15)
    ctx.workers = workers[:1]
    rate = apply_rate(samples, backlog)
    ctx.results["raw"][f"apply_{nworkers}w"] = {"backlog": backlog, "drain_s": drain_time(samples), "rate": rate,
                                                "worker_mem": mems, "samples": samples[::5]}
    return rate


def e2e(ctx):
    apply1 = None
    if ctx.local:
        log(f"phase 3c: worker apply rate, backlog of {ctx.p['burst']:,} writes, 1 and 4 workers (concurrency 16 each)")
        apply1 = measure_apply_rate(ctx, 1)
        ctx.figure("apply_rate_1w", "worker apply rate, 1 worker", apply1, "tasks/s", ref="SET")
        ctx.memory("after_apply_1w")
        apply4 = measure_apply_rate(ctx, 4)
        ctx.figure("apply_rate_4w", "worker apply rate, 4 workers", apply4, "tasks/s", ref="SET")
    best = sustained(ctx, 0.7 * apply1 if apply1 else 4000)
    ctx.figure("sustained_rps", "sustained e2e writes/s (accept = apply), 1 worker", best, "req/s", ref="SET",
               ratio_target=0.20)
    ctx.memory("after_sustained")
    burst_drain(ctx)


def sentinel(ctx):
    log("phase 6: sentinel mode, MIN_REPLICAS_ACK=1 (1 master + 2 replicas, 3 sentinels, AOF everysec)")
    # free the CPU of the standalone processes
    ctx.stop_workers(timeout=10.0)
    ctx.procs.stop(ctx.server)
    ctx.server = None
    base = os.path.join(ctx.workdir, "sentinel")
    ports = [free_port() for _ in range(3)]
    sports = [free_port() for _ in range(3)]
    start_sentinel_set(ctx.procs, base, ports, sports)
    env = {"KVQ__REDIS__MODE": "sentinel", "KVQ__REDIS__SENTINELS": ",".join(f"127.0.0.1:{p}" for p in sports),
           "KVQ__REDIS__MASTER_NAME": "mymaster", "KVQ__REDIS__MIN_REPLICAS_ACK": "1"}
    saved = ctx.redis_port
    ctx.redis_port = None
    ctx.server, ctx.url = ctx.start_server(env, name="kvq-server-sentinel")
    ctx.workers = [ctx.start_worker(1, env)]
    ctx.redis_port = saved
    for c in (1, 32):
        d = ctx.load(f"sentinel_writes_c{c}", "write.lua", c, {"BENCH_PREFIX": f"s{ctx.run_id}c{c}"})
        ctx.figure(f"sentinel_writes_c{c}_rps", f"sentinel+WAIT 1: writes accepted/s c={c}", d["ok_rps"], "req/s", ref="SET")
        ctx.figure(f"sentinel_writes_c{c}_p99", f"sentinel+WAIT 1: writes p99 c={c}", d["p99_ms"], "ms")
    ctx.memory("after_sentinel")


def cpu_segment(ctx, label, ports, prefix):
    """Writes accepted at c=32 (ctx.load: warm-up and measured run, unique keys PREFIX-...) and the
    drain after them, with each Redis's CPU time and XADD calls before and after, and the data
    keys the load created on each (every write is a new key, so they count its applied writes).
    What each Redis spends while kvq idles (cluster bus, cron, the worker's blocking reads) is
    measured first and taken off, so the figure is the CPU the writes cost. Returns wrk's figures
    and one dict per port."""
    idle_s = 1.0 if ctx.smoke else 3.0
    before_idle = [redis_counters(p) for p in ports]
    time.sleep(idle_s)
    before = [redis_counters(p) for p in ports]
    idle_rate = [(b["cpu_s"] - i["cpu_s"]) / idle_s for i, b in zip(before_idle, before)]
    t0 = time.monotonic()
    d = ctx.load(label, "write.lua", 32, {"BENCH_PREFIX": prefix})
    ctx.wait_drained(label)
    after = [redis_counters(p) for p in ports]
    secs = time.monotonic() - t0
    masters = []
    for port, b, a, idle in zip(ports, before, after, idle_rate):
        writes = count_keys(port, f"*{prefix}*")
        cpu = a["cpu_s"] - b["cpu_s"]
        net = max(0.0, cpu - idle * secs)
        masters.append({"port": port, "cpu_s": round(cpu, 4), "idle_cpu_per_s": round(idle, 5),
                         "net_cpu_s": round(net, 4), "seconds": round(secs, 2), "tasks": a["xadd"] - b["xadd"],
                         "writes": writes, "cpu_us_per_write": cpu_us_per_write(net, writes),
                         "top_commands": top_commands(b["commands"], a["commands"])})
    ctx.results["raw"][label]["redis"] = masters
    return d, masters


CLUSTER_MASTERS = 3


def cluster(ctx):
    """Redis Cluster (3 masters, no replicas, AOF off like phases 1-5) against one fresh master in
    the same run: writes accepted, the sustained rate, Redis CPU per applied write (per master and
    in all) and how evenly keys and tasks spread over the masters."""
    if not ctx.local:
        ctx.note("cluster: needs the local setup (it starts its own Redis Cluster); skipped with --url")
        return
    log(f"phase 10: Redis Cluster of {CLUSTER_MASTERS} masters against one master (same run)")
    ctx.stop_workers(timeout=10.0)
    if ctx.server:
        ctx.procs.stop(ctx.server)
        ctx.server = None
    ports = [free_port() for _ in range(CLUSTER_MASTERS + 1)]
    bus_ports = [free_port() for _ in range(CLUSTER_MASTERS)]
    if len(set(ports + bus_ports)) != len(ports) + len(bus_ports):
        raise RuntimeError("free_port handed out the same port twice; run again")
    one_port, ports = ports[0], ports[1:]
    saved = ctx.redis_port
    try:
        # one master: a fresh redis-server (AOF off) and a fresh server and worker, measured exactly as the cluster is
        one_redis = start_redis(ctx.procs, "redis-one-master", one_port, os.path.join(ctx.workdir, "one-master"),
                                aof=False)
        ctx.redis_port = one_port
        ctx.server, ctx.url = ctx.start_server(name="kvq-server-one-master")
        ctx.workers = [ctx.start_worker(1)]
        one_d, one = cpu_segment(ctx, "cluster_one_master_writes_c32", [one_port], f"k{ctx.run_id}one")
        ctx.stop_workers(timeout=10.0)
        ctx.procs.stop(ctx.server)
        ctx.server = None
        ctx.procs.stop(one_redis)

        start_cluster(ctx.procs, os.path.join(ctx.workdir, "cluster"), ports, bus_ports)
        env = {"KVQ__REDIS__MODE": "cluster", "KVQ__REDIS__NODES": ",".join(f"127.0.0.1:{p}" for p in ports)}
        ctx.redis_port = None
        ctx.server, ctx.url = ctx.start_server(env, name="kvq-server-cluster")
        ctx.workers = [ctx.start_worker(1, env)]
        d32, masters = cpu_segment(ctx, "cluster_writes_c32", ports, f"k{ctx.run_id}cl")
        d1 = ctx.load("cluster_writes_c1", "write.lua", 1, {"BENCH_PREFIX": f"k{ctx.run_id}c1"})
        ctx.wait_drained("the cluster's c=1 writes")
        apply1 = (ctx.results["raw"].get("apply_1w") or {}).get("rate")
        best = sustained(ctx, 0.7 * apply1 if apply1 else 4000, raw_key="cluster_sustained_steps")
    finally:
        ctx.redis_port = saved

    ctx.figure("cluster_one_master_writes_c32_rps", "one master (cluster phase): writes accepted/s c=32",
               one_d["ok_rps"], "req/s", ref="SET")
    ctx.figure("cluster_writes_c32_rps", f"cluster of {CLUSTER_MASTERS} masters: writes accepted/s c=32",
               d32["ok_rps"], "req/s", ref="SET")
    ctx.figure("cluster_writes_c32_p99", "cluster: writes p99 c=32", d32["p99_ms"], "ms")
    ctx.figure("cluster_writes_c1_rps", "cluster: writes accepted/s c=1", d1["ok_rps"], "req/s", ref="SET")
    ctx.figure("cluster_writes_c1_p99", "cluster: writes p99 c=1", d1["p99_ms"], "ms")
    ctx.figure("cluster_sustained_rps", "cluster: sustained e2e writes/s (accept = apply), 1 worker", best, "req/s",
               ref="SET")
    ctx.figure("cluster_one_master_cpu_us", "one master: Redis CPU per applied write", one[0]["cpu_us_per_write"], "us")
    total_cpu, total_writes = sum(m["net_cpu_s"] for m in masters), sum(m["writes"] for m in masters)
    ctx.figure("cluster_cpu_us", "cluster: Redis CPU per applied write, all masters",
               cpu_us_per_write(total_cpu, total_writes), "us")
    for i, m in enumerate(masters):
        ctx.figure(f"cluster_master{i}_cpu_us", f"cluster master {i}: Redis CPU per write it applied",
                   m["cpu_us_per_write"], "us")
    ctx.figure("cluster_keys_balance", "cluster: data keys, least / most loaded master",
               balance(m["writes"] for m in masters), "ratio")
    ctx.figure("cluster_tasks_balance", "cluster: tasks queued (XADD), least / most loaded master",
               balance(m["tasks"] for m in masters), "ratio")
    ctx.memory("after_cluster")


def tls(ctx):
    """The cost of TLS: writes and reads at c=32 through kvq against a plaintext and a TLS-only
    Redis (same settings otherwise), back to back in this run; the ratios are the figures."""
    if not ctx.local:
        ctx.note("tls: needs the local setup (it starts its own Redis servers); skipped with --url")
        return
    log("phase 7: TLS cost, writes and reads c=32, plaintext then TLS Redis (same run)")
    ctx.stop_workers(timeout=10.0)
    if ctx.server:
        ctx.procs.stop(ctx.server)
        ctx.server = None
    base = os.path.join(ctx.workdir, "tls")
    certs = make_certs(os.path.join(base, "certs"))
    plain_port, tls_port = free_port(), free_port()
    start_redis(ctx.procs, "redis-plain", plain_port, os.path.join(base, "plain"), aof=False)
    start_tls_redis(ctx.procs, "redis-tls", tls_port, os.path.join(base, "tls"), certs)
    modes = (("plaintext", {"KVQ__REDIS__URL": f"redis://127.0.0.1:{plain_port}"}),
             ("tls", {"KVQ__REDIS__URL": f"rediss://127.0.0.1:{tls_port}", "KVQ__REDIS__TLS_CA_FILE": certs[0]}))
    rps = {}
    saved = ctx.redis_port
    ctx.redis_port = None
    try:
        for mode, env in modes:
            ctx.server, ctx.url = ctx.start_server(env, name=f"kvq-server-{mode}")
            ctx.workers = [ctx.start_worker(1, env)]
            w = ctx.load(f"tls_{mode}_writes_c32", "write.lua", 32, {"BENCH_PREFIX": f"t{ctx.run_id}{mode}"})
            ctx.wait_drained(f"the {mode} write run")
            prefix = f"t{ctx.run_id}{mode}r"
            seed(ctx, prefix, ctx.p["seed"])
            r = ctx.load(f"tls_{mode}_reads_c32", "read.lua", 32, {"BENCH_PREFIX": prefix, "BENCH_KEYS": str(ctx.p["seed"] // 2)})
            rps[mode] = (w["ok_rps"], r["ok_rps"])
            ctx.stop_workers(timeout=10.0)
            ctx.procs.stop(ctx.server)
            ctx.server = None
    finally:
        ctx.redis_port = saved
    for i, what in enumerate(("writes", "reads")):
        plain, secure = rps["plaintext"][i], rps["tls"][i]
        ctx.figure(f"tls_{what}_c32_plain_rps", f"{what}/s c=32, plaintext Redis (TLS phase)", plain, "req/s")
        ctx.figure(f"tls_{what}_c32_rps", f"{what}/s c=32, TLS Redis", secure, "req/s")
        ctx.figure(f"tls_{what}_ratio", f"{what}: TLS / plaintext (same run)", secure / plain if plain else None, "x")


# the phases --only names, in the order a run takes them (setup always runs first)
PHASES = {"startup": startup, "writes": writes, "reads": reads, "auth": auth, "e2e": e2e, "sentinel": sentinel,
          "cluster": cluster, "tls": tls, "soak": soak, "bounded": bounded}

"""What a run reports: the table, the JSON results file, the run's metadata, the kvq log
warnings, and the checks that make a smoke run fail."""

import datetime
import json
import os
import platform
import subprocess
import sys
import time

from . import REPO
from .figures import format_value

# The figures a local run records per phase; a smoke run fails when one is missing or n/a.
EXPECTED_FIGURES = {
    "setup": ["redis_set", "redis_get", "server_rss_idle", "worker_rss_idle"],
    "startup": ["startup_server_ms", "startup_worker_ms"],
    "writes": [f"writes_c{c}_{f}" for c in (1, 32) for f in ("rps", "p50", "p99", "p999")] +
              ["writes_c32_no_worker_rps", "writes_c32_no_worker_p99", "server_rss_after_writes",
               "server_hwm_after_writes"],
    "reads": [f"reads_c{c}_{f}" for c in (1, 32) for f in ("rps", "p50", "p99", "p999")],
    "auth": [f"auth_{w}_{m}_{f}" for w in ("writes", "reads") for m in ("none", "tokens") for f in ("rps", "p99")] +
            ["auth_writes_cost_pct", "auth_reads_cost_pct"],
    "e2e": ["apply_rate_1w", "apply_rate_4w", "sustained_rps", "burst_drain_s"],
    "sentinel": [f"sentinel_writes_c{c}_{f}" for c in (1, 32) for f in ("rps", "p99")],
    "cluster": ["cluster_one_master_writes_c32_rps", "cluster_writes_c32_rps", "cluster_writes_c32_p99",
                "cluster_writes_c1_rps", "cluster_writes_c1_p99", "cluster_sustained_rps", "cluster_one_master_cpu_us",
                "cluster_cpu_us"] + [f"cluster_master{i}_cpu_us" for i in range(3)] +
               ["cluster_keys_balance", "cluster_tasks_balance"],
    "tls": [f"tls_{w}_{f}" for w in ("writes", "reads") for f in ("c32_plain_rps", "c32_rps", "ratio")],
    "soak": ["soak_writes", "soak_errors", "soak_mem_max", "soak_mem_growth_2nd_half"],
    "bounded": ["bounded_failed", "bounded_peak_mb"],
}
# n/a is a finding, not a breakage, for these: a debug build on a busy machine may sustain no
# step, and a smoke run's small backlog may drain before the depth is sampled between 90 % and
# 10 % of it (smoke_problems checks instead that the backlog was there and drained)
SPEED_DEPENDENT = {"sustained_rps", "apply_rate_1w", "apply_rate_4w", "cluster_sustained_rps"}


def smoke_problems(results, problems, phases):
    """Why a smoke run that ran `phases` failed ([] when it did not): the error that stopped it, the
    notes that say a phase did not work, and every expected figure that is missing or n/a."""
    out = []
    if results.get("error"):
        out.append(f"the run stopped: {results['error']}")
    out.extend(problems)
    got = {f["key"]: f["value"] for f in results["figures"]}
    for phase in phases:
        for key in EXPECTED_FIGURES[phase]:
            if key not in got:
                out.append(f"figure {key} ({phase}) was not recorded")
            elif got[key] is None and key not in SPEED_DEPENDENT:
                out.append(f"figure {key} ({phase}) is n/a")
    if "e2e" in phases:
        for n in (1, 4):
            a = results["raw"].get(f"apply_{n}w")
            if a is None:
                out.append(f"no apply-rate measurement with {n} worker(s)")
            elif not a.get("backlog") or a["backlog"] < 0 or a.get("drain_s") is None:
                out.append(f"apply rate with {n} worker(s): backlog {a.get('backlog')} did not build up or did not drain")
        steps = results["raw"].get("sustained_steps") or []
        if not any(s.get("accepted_rps") for s in steps):
            out.append("the sustained-rate search ran no step that accepted writes")
    if "cluster" in phases:
        steps = results["raw"].get("cluster_sustained_steps") or []
        if not any(s.get("accepted_rps") for s in steps):
            out.append("the cluster's sustained-rate search ran no step that accepted writes")
    return out


def table_lines(results):
    rows = [("figure", "value", "unit", "target", "ratio", "met")]
    for f in results["figures"]:
        r = f["ratio_to_redis_benchmark"]
        rows.append((f["figure"], format_value(f["value"]), f["unit"], f["target"] or "",
                     f"{r:.3f}" if r is not None else "",
                     "" if f["met"] is None else ("yes" if f["met"] else "NO")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i in (0, 2, 3) else c.rjust(widths[i]) for i, c in enumerate(r)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(f"note: {n}" for n in results["notes"])
    return lines


def print_table(results):
    for line in table_lines(results):
        print(line)


def write_results(results, out_dir):
    """Writes the results to OUT_DIR/<UTC timestamp>.json; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(out_dir, f"{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


def count_log_warnings(workdir):
    """{'kvq-*.log': number of WARN/ERROR lines} for the kvq logs of a run that have any."""
    counts = {}
    for f in sorted(os.listdir(workdir)):
        if f.startswith("kvq-") and f.endswith(".log"):
            with open(os.path.join(workdir, f), errors="replace") as fh:
                n = sum(1 for line in fh if '"level":"WARN"' in line or '"level":"ERROR"' in line)
            if n:
                counts[f] = n
    return counts


def meta(ctx, started):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "command": "bash bench/run.sh " + " ".join(sys.argv[1:]),
        "mode": "url" if ctx.args.url else "local",
        "target": ctx.url if ctx.args.url else "local processes",
        "quick": ctx.quick,
        "smoke": ctx.smoke,
        "binaries": ctx.bin_dir if ctx.local else None,
        "params": ctx.p,
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "git_commit": out(["git", "rev-parse", "--short", "HEAD"]) or os.environ.get("BENCH_GIT_COMMIT"),
        "git_dirty": bool(out(["git", "status", "--porcelain", "--", "src", "Cargo.toml"])),
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
        "redis": out(["redis-server", "--version"]), "wrk": out(["sh", "-c", "wrk -v 2>&1 | head -1"]),
        "redis_persistence": "standalone and cluster phases: AOF off, RDB off; sentinel phase: AOF everysec",
    }


def markdown_table(results, source):
    """The README's performance table, rendered from a results file: one row per figure, and
    a line naming the file the figures come from (commit it under bench/results/published/)."""
    lines = ["| figure | kvq | ratio to redis-benchmark |", "|---|---|---|"]
    for f in results["figures"]:
        r = f["ratio_to_redis_benchmark"]
        lines.append(f"| {f['figure']} | {format_value(f['value'])} {f['unit']} | {'' if r is None else f'{r:.3f}'} |")
    lines.append("")
    lines.append(f"Figures from [{source}]({source}).")
    return lines


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="render the README performance table from a results JSON")
    ap.add_argument("--table", required=True, metavar="FILE", help="a results JSON (bench/results/published/)")
    args = ap.parse_args()
    with open(args.table) as fh:
        print("\n".join(markdown_table(json.load(fh), os.path.relpath(args.table, REPO))))

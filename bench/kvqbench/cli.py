"""Arguments and orchestration: which phases run, in which order, and what the run exits with.

Local mode (default): builds the release binaries, starts a fresh redis-server, kvq-server and
kvq-worker on free loopback ports, runs redis-benchmark as the in-run reference, then the phases
of bench/README.md. `--url http://host:port` runs only the load phases against a deployed system.
`--smoke` runs every phase once with tiny counts and fails when one of them does not work.
Every process it starts is stopped at the end; every wait is bounded.
"""

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import time
import urllib.parse

from . import BENCH_DIR, REPO, log, phases
from .context import PARAMS, Context, default_bin_dir
from .report import count_log_warnings, meta, print_table, smoke_problems, write_results


def duration_seconds(text):
    """'30m', '90s', '2h' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 90s)") from None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="bench/run.sh", description="kvq benchmark suite (see bench/README.md)")
    ap.add_argument("--url", help="run only the load phases against a deployed kvq-server (http://host:port)")
    ap.add_argument("--quick", action="store_true", help="a few seconds per phase (about 1 minute)")
    ap.add_argument("--smoke", action="store_true",
                    help="every phase once with tiny counts (well under a minute); exits non-zero when a phase "
                         "breaks; asserts nothing about speed; the JSON goes to the run's temporary directory")
    ap.add_argument("--no-build", action="store_true", help="use the existing binaries")
    ap.add_argument("--bin-dir", default=os.environ.get("BENCH_BIN_DIR"),
                    help="with --no-build: the folder of kvq-server and kvq-worker, relative to the repository "
                         "root (e.g. target/debug; default $BENCH_BIN_DIR, else the release binaries)")
    ap.add_argument("--skip-sentinel", action="store_true", help="leave out phase 6")
    ap.add_argument("--only", help="comma-separated subset of phases: startup,writes,reads,auth,e2e,sentinel,cluster,tls,soak,bounded "
                    "(redis-benchmark and the idle memory snapshot always run in local mode)")
    ap.add_argument("--ref-redis", help="with --url: a loopback host:port to run redis-benchmark against for ratios")
    ap.add_argument("--soak", type=duration_seconds, default=None,
                    help="length of the soak phase, e.g. 30m, 90s (default 5m; --quick 30s, --smoke 4s)")
    ap.add_argument("--out", help="folder for the JSON result (default bench/results)")
    args = ap.parse_args(argv)
    if args.url:
        u = urllib.parse.urlsplit(args.url)
        if u.scheme != "http" or not u.hostname:
            ap.error("--url must look like http://host:port")
    if args.quick and args.smoke:
        ap.error("--quick and --smoke exclude each other")
    if args.smoke and args.url:
        ap.error("--smoke runs local processes; it cannot be combined with --url")
    if args.bin_dir and not args.no_build and not args.url:
        ap.error("--bin-dir (or BENCH_BIN_DIR) needs --no-build: the suite only builds the release binaries")
    if args.only:
        unknown = set(args.only.split(",")) - set(phases.PHASES)
        if unknown:
            ap.error(f"--only: unknown phase(s) {','.join(sorted(unknown))}")
    for tool in ("wrk",) + (() if args.url else ("redis-server", "redis-sentinel", "redis-cli", "redis-benchmark", "openssl")):
        if not shutil.which(tool):
            ap.error(f"{tool} is not installed (bench/run.sh installs it)")
    if not args.url:
        bin_dir = os.path.join(REPO, args.bin_dir) if args.bin_dir else default_bin_dir()
        if args.no_build:
            missing = [b for b in ("kvq-server", "kvq-worker") if not os.access(os.path.join(bin_dir, b), os.X_OK)]
            if missing:
                ap.error(f"--no-build: {', '.join(missing)} not found in {bin_dir}")
        args.bin_dir = bin_dir
    return args


def phases_to_run(args):
    only = set(args.only.split(",")) if args.only else None
    names = []
    for name in phases.PHASES:
        if only is not None and name not in only:
            continue
        if name in ("startup", "sentinel", "cluster", "auth", "tls") and args.url:
            continue
        if name == "sentinel" and args.skip_sentinel:
            continue
        names.append(name)
    return names


def run(ctx, names):
    """Runs the phases; a failure ends the run but keeps what was measured so far."""
    started = time.time()
    try:
        if ctx.local:
            phases.setup_local(ctx)
        else:
            phases.setup_url(ctx)
        for name in names:
            phases.PHASES[name](ctx)
    except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as e:
        # report what was measured so far, and why the run stopped
        dead = ctx.procs.dead()
        ctx.results["error"] = f"{type(e).__name__}: {e}" + (f"; {', '.join(dead)}" if dead else "")
        ctx.results["notes"].append("run stopped early: " + ctx.results["error"])
        log("ERROR " + ctx.results["error"])
    finally:
        ctx.procs.stop_all()
        counts = ctx.log_warnings = count_log_warnings(ctx.workdir)
        if counts:
            ctx.results["notes"].append(f"warnings/errors logged by kvq: {counts} (logs in {ctx.workdir})")
    ctx.results["meta"] = meta(ctx, started)
    return ctx.results


def main(argv=None):
    args = parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    ctx = Context(args, dict(PARAMS[mode]), args.bin_dir)
    names = phases_to_run(args)

    # SIGTERM/SIGINT: unwind through the finally blocks so every started process is stopped.
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = run(ctx, names)
    except KeyboardInterrupt:
        log("interrupted; processes stopped")
        return 130
    finally:
        ctx.procs.stop_all()
    # a smoke run's JSON stays in its temporary directory, which is removed when the run passes
    # (its figures mean nothing; scripts/test.sh runs it every time)
    out_dir = args.out or (ctx.workdir if args.smoke else os.path.join(BENCH_DIR, "results"))
    path = write_results(results, out_dir)
    print()
    print_table(results)
    failed = bool(results.get("error"))
    if args.smoke:
        problems = smoke_problems(results, ctx.problems, (["setup"] if ctx.local else []) + names)
        failed = failed or bool(problems)
    # a smoke run keeps its directory only for a failure or kvq's own warnings (not for a busy machine)
    keep = failed or bool(ctx.log_warnings) or (bool(results["notes"]) and not args.smoke)
    if keep or not path.startswith(ctx.workdir + os.sep):
        print(f"\nresults: {os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path}")
    if args.smoke:
        for p in problems:
            print(f"SMOKE FAILURE: {p}")
        print(f"smoke run: {'FAILED' if failed else 'ok'} in {results['meta']['duration_s']} s")
    if keep:
        print(f"logs kept in {ctx.workdir}")
    else:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    return 1 if failed else 0

"""kvq benchmark suite, standard library only; started by bench/run.sh (`python3 -m kvqbench`).

Modules, one concern each: procs (processes, pid file, ports, CPU and memory of processes),
redis (redis-server, redis-sentinel, redis-cli, redis-benchmark), http (HTTP client, /metrics,
readiness), wrk (running wrk and parsing its figures), figures (the pure computations: slopes,
sustained-step verdicts, apply rates), context (the state the phases share), phases (one function
per phase of bench/README.md), report (table, JSON results, run metadata, smoke-run checks),
cli (arguments and orchestration).
"""

import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)
WRK_DIR = os.path.join(BENCH_DIR, "wrk")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

"""Plots a soak series (bench/results/soak-*.csv): Redis used memory and accepted writes per
second over time, and the write p99. Usage: python3 bench/plot_soak.py SERIES.csv OUT.png
(needs matplotlib: python3 -m venv .venv && .venv/bin/pip install matplotlib)."""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        rows = list(csv.DictReader(f))
    t = [float(r["t"]) for r in rows]
    mem = [int(r["used_memory"]) / 2**20 for r in rows]
    rps = [float(r["writes_per_s"]) for r in rows]
    p99 = [float(r["p99_ms"]) if r["p99_ms"] else float("nan") for r in rows]
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    a.plot(t, mem, color="tab:blue", label="Redis used memory (MiB)")
    a.set_ylabel("MiB")
    a.set_ylim(bottom=0)
    a.legend(loc="upper left")
    a2 = a.twinx()
    a2.plot(t, rps, color="tab:orange", alpha=0.6, label="writes accepted/s")
    a2.set_ylabel("writes/s")
    a2.set_ylim(bottom=0)
    a2.legend(loc="upper right")
    b.plot(t, p99, color="tab:red", label="write p99 (ms, histogram bucket bound)")
    b.set_ylabel("ms")
    b.set_xlabel("seconds")
    b.legend(loc="upper left")
    fig.suptitle("kvq soak: overwrites of 100 keys, Redis maxmemory 48 MB")
    fig.tight_layout()
    fig.savefig(dst, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

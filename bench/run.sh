#!/usr/bin/env bash
# kvq benchmark suite: `bash bench/run.sh [--quick|--smoke] [--url http://host:port] [--no-build [--bin-dir DIR]]
# [--skip-sentinel] [--only PHASES]`. See bench/README.md. Installs its tools if missing, then runs the
# Python package bench/kvqbench (standard library only) as `python3 -m kvqbench`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y wrk redis-server redis-sentinel redis-tools openssl
fi
command -v python3 >/dev/null || { echo "bench: python3 is required" >&2; exit 1; }

# The soak plot needs matplotlib (kvqbench itself is standard library only): a venv of its own,
# pinned; without PyPI the soak phase notes that it drew no plot.
PLOT_PIN="matplotlib==3.9.2"
if [ -z "${BENCH_PLOT_PYTHON:-}" ]; then
  plot_venv=".tools/plot-venv"
  if [ "$(cat "$plot_venv/.pins" 2>/dev/null)" != "$PLOT_PIN" ]; then
    echo "bench: pip install $PLOT_PIN into $plot_venv" >&2
    if python3 -m venv "$plot_venv" && "$plot_venv/bin/pip" install -q --disable-pip-version-check "$PLOT_PIN"; then
      echo "$PLOT_PIN" >"$plot_venv/.pins"
    fi
  fi
  [ -f "$plot_venv/.pins" ] && export BENCH_PLOT_PYTHON="$PWD/$plot_venv/bin/python"
fi

# kvqbench mirrors the pids of everything it starts into this file; the trap stops those
# (by pid, nothing else) if kvqbench itself is killed or interrupted.
BENCH_PIDFILE="$(mktemp -t kvq-bench-pids.XXXXXX)"
export BENCH_PIDFILE
py=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
    kill -TERM "$py" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$py" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -s "$BENCH_PIDFILE" ]; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$BENCH_PIDFILE"
    sleep 1
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$BENCH_PIDFILE"
  fi
  rm -f "$BENCH_PIDFILE"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

PYTHONPATH="$PWD/bench${PYTHONPATH:+:$PYTHONPATH}" python3 -m kvqbench "$@" &
py=$!
wait "$py"

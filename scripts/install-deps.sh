#!/usr/bin/env bash
# Installs the system packages kvq's tests and local runs need (Debian/Ubuntu, as root or via sudo).
# Idempotent: installs only what is missing.
set -euo pipefail

want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
need redis-server redis-server
need redis-sentinel redis-sentinel
need redis-cli redis-tools
need curl curl
if [[ "${1:-}" != "--runtime-only" ]]; then
  need chromium chromium
  need chromedriver chromium-driver
  need python3 python3
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || want+=(python3-venv)
  need unzip unzip
  need npm npm
  need openssl openssl # certificates the TLS tests and the benchmark's TLS phase make at run time
  need wrk wrk # load generator of the benchmark suite (bench/), smoke-run by scripts/test.sh
  # promtool checks and unit-tests the chart's alerts; prometheus runs them against real kvq.
  need promtool prometheus
  need prometheus prometheus
fi

if ((${#want[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing: ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
# The Debian packages start a system redis on 6379 and a prometheus on 9090 where systemd runs;
# tests start their own on free loopback ports.

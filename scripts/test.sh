#!/usr/bin/env bash
# Runs every test kvq has, installing what they need first (Debian/Ubuntu with a Rust toolchain).
# The Rust tests start their own redis-server/redis-sentinel processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
bash scripts/install-deps.sh

step "chart tools (helm 3 and 4, python venv)"
bash scripts/chart-tools.sh
export HELM="$PWD/.tools/bin/helm"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --no-default-features --features worker --bins -- -D warnings
cargo clippy --no-default-features --features server --bins -- -D warnings

step "feature gating: the worker build must not compile poem-openapi or handlebars"
if cargo tree --no-default-features --features worker -e normal --prefix none | grep -E '^(poem-openapi|handlebars) '; then
  echo "FAIL: the worker-only build pulls in server dependencies" >&2
  exit 1
fi

step "chart verification (ct lint equivalent, schema validation)"
bash scripts/verify-chart.sh --no-cargo

step "GitHub workflows: schema, zizmor --offline (no finding), shellcheck of the release scripts"
bash scripts/check-workflows.sh

step "alert rules: promtool check rules and promtool test rules on the chart's rendered PrometheusRule"
cargo test --test chart alerts:: -- --test-threads=2

step "API fuzzing against its own OpenAPI spec (Schemathesis, real redis/server/worker)"
bash scripts/fuzz-api.sh

step "cargo test (unit; app: API, auth, TLS and ACL, queue, outage, storage, metrics, alerting, pages, browser; chart: render, contract, alerts, dashboard, release packaging, workflow pins; faults: HA, chart pods in sentinel and cluster mode)"
cargo test --all-targets --no-fail-fast -- --test-threads="${KVQ_TEST_THREADS:-4}"

step "API contract in cluster mode: the black-box API suite against kvq on a 6-node Redis Cluster (3 masters x 1 replica)"
KVQ_TEST_REDIS=cluster cargo test --test app remote_api -- --test-threads=2

step "benchmark suite: unit tests, then a smoke run of every phase on the debug binaries cargo test built"
python3 -m unittest discover -s bench -p 'test_*.py'
bash bench/run.sh --smoke --no-build --bin-dir "${CARGO_TARGET_DIR:-target}/debug"

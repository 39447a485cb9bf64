#!/usr/bin/env bash
# Runs the whole system locally: a Redis (unless KVQ__REDIS__URL points at one), kvq-server and
# kvq-worker, with readable logs. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --runtime-only
cargo build --release --bins

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [[ -z "${KVQ__REDIS__URL:-}" ]]; then
  port="${KVQ_DEV_REDIS_PORT:-6390}"
  data=".tools/dev-redis"
  mkdir -p "$data"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --appendonly yes --save '' \
    --daemonize no --loglevel warning &
  pids+=($!)
  export KVQ__REDIS__URL="redis://127.0.0.1:$port"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
fi

export KVQ__LOG__FORMAT="${KVQ__LOG__FORMAT:-pretty}"
# Local development runs without tokens unless told otherwise (README, "Authentication").
export KVQ__AUTH__MODE="${KVQ__AUTH__MODE:-none}"
export KVQ__SERVER__BIND="${KVQ__SERVER__BIND:-127.0.0.1:8080}"
export KVQ__WORKER__BIND="${KVQ__WORKER__BIND:-127.0.0.1:9090}"
./target/release/kvq-server & pids+=($!)
./target/release/kvq-worker & pids+=($!)

base="http://${KVQ__SERVER__BIND/0.0.0.0/127.0.0.1}"
for _ in $(seq 100); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<MSG

kvq is running (Redis: $KVQ__REDIS__URL)
  home page:    $base/
  API docs:     $base/docs
  OpenAPI spec: $base/openapi.json
  try:          curl -X PUT '$base/v1/keys/a?wait=5' -H 'content-type: application/json' -d '{"value":"1"}'
                curl $base/v1/keys/a
Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"

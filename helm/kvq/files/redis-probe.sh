#!/bin/sh
# Exec probes of the redis and sentinel containers:
#   redis-probe.sh redis      the local redis answers PING
#   redis-probe.sh live       liveness and startup of the redis container: the local redis
#                             answers PING, or is alive but busy: LOADING (a replica loading
#                             a full sync, or any node loading its AOF at start; killing it
#                             would restart the load from scratch) or MASTERDOWN (a replica
#                             whose master is unreachable; restarting it would not help)
#   redis-probe.sh sentinel   the local sentinel answers PING
#   redis-probe.sh ready      readiness of the redis container: PING, and in sentinel mode a
#                             replica must be in sync with its master (link up) and known
#                             to the local sentinel. A rollout waits for that before it
#                             stops the next pod, so a failover never skips a replica.
#                             In cluster mode: PING, cluster_state:ok, and a replica's link
#                             to its master up (a rollout never stops the next pod while a
#                             shard's replica is still syncing); a node that is not yet a
#                             member (a master without slots) is not ready.
# Environment: see redis-lib.sh.
set -u
SCRIPT_NAME=redis-probe
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
case "${1:-redis}" in
  sentinel) out=$(scli "$LOCAL_ADDR" PING 2>&1) ;;
  *) out=$(rcli "$LOCAL_ADDR" PING 2>&1) ;;
esac
if [ "${1:-redis}" = "live" ]; then
  case "$out" in
    PONG | LOADING* | MASTERDOWN*) exit 0 ;;
    *) printf '%s\n' "$out" >&2; exit 1 ;;
  esac
fi
[ "$out" = "PONG" ] || { printf '%s\n' "$out" >&2; exit 1; }
[ "${1:-redis}" = "ready" ] || exit 0
if [ "$REDIS_MODE" = "cluster" ]; then
  state=$(cluster_info "$LOCAL_ADDR" cluster_state)
  [ "$state" = "ok" ] || { echo "cluster_state: ${state:-unknown}" >&2; exit 1; }
  info=$(rcli "$LOCAL_ADDR" INFO replication 2>/dev/null | tr -d '\r')
  case "$info" in
    *role:master*)
      slots=$(cluster_nodes "$LOCAL_ADDR" | awk '$3 ~ /myself/ { print NF - 8 }')
      [ "${slots:-0}" -gt 0 ] || { echo "master without slots: not a member yet" >&2; exit 1; }
      exit 0 ;;
  esac
  echo "$info" | grep -qx 'master_link_status:up' || { echo "replica: link to master down" >&2; exit 1; }
  exit 0
fi
[ "$REDIS_MODE" = "sentinel" ] || exit 0

info=$(rcli "$LOCAL_ADDR" INFO replication 2>/dev/null | tr -d '\r')
case "$info" in
  *role:master*) exit 0 ;;
esac
echo "$info" | grep -qx 'master_link_status:up' || { echo "replica: link to master down" >&2; exit 1; }
sentinel_lists_replica "$ANNOUNCE_HOST" "$REDIS_PORT" || { echo "replica unknown to the local sentinel" >&2; exit 1; }

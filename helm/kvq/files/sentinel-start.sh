#!/bin/sh
# Starts the sentinel of one Redis pod (container `sentinel`), sentinel mode only.
#
# Its config lives in DATA_DIR/sentinel.conf (on the PVC), so a sentinel that restarts keeps
# its id, epochs and the last master it knew; the static settings are rewritten on every
# start from the environment. The master to monitor comes from discover_master (running
# sentinels first, then this pod's persisted state, then a peer running as master, then
# ordinal 0 on a fresh install). Sentinels announce stable hostnames, not pod IPs.
#
# Environment: see redis-lib.sh, plus
#   QUORUM                   [2]
#   DOWN_AFTER_MS            [5000]
#   FAILOVER_TIMEOUT_MS      [15000]
#   PARALLEL_SYNCS           [1]
#   EXTRA_CONF_FILE          file appended to sentinel.conf []
#   EXEC                     set to 0 to print the config instead of exec'ing the sentinel [1]
set -eu
SCRIPT_NAME=sentinel-start
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"

: "${QUORUM:=2}"
: "${DOWN_AFTER_MS:=5000}"
: "${FAILOVER_TIMEOUT_MS:=15000}"
: "${PARALLEL_SYNCS:=1}"
: "${EXTRA_CONF_FILE:=}"
: "${EXEC:=1}"

mkdir -p "$DATA_DIR"
# ACL mode: read now, so a missing Secret key stops the pod before anything starts.
if [ -n "$ACL_RULES_DIR" ]; then SENTINEL_USER_PASSWORD=$(acl_password sentinel); fi
conf="$DATA_DIR/sentinel.conf"
tmp="$DATA_DIR/sentinel.conf.tmp"

# shellcheck disable=SC2046 # "host port source", split on purpose
set -- $(discover_master quick)
master_host=$1 master_port=$2 source=$3
log "monitoring $MASTER_NAME at $master_host:$master_port (source: $source)"

{
  echo "bind $BIND_ADDRESS"
  if [ "$REDIS_TLS" = "1" ]; then tls_conf "$SENTINEL_PORT"; else echo "port $SENTINEL_PORT"; fi
  echo "dir $DATA_DIR"
  echo "protected-mode no"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $ANNOUNCE_HOST"
  echo "sentinel announce-port $SENTINEL_PORT"
  if [ -n "$SENTINEL_PASSWORD" ]; then
    printf 'requirepass %s\n' "$(conf_quote "$SENTINEL_PASSWORD")"
    printf 'sentinel sentinel-pass %s\n' "$(conf_quote "$SENTINEL_PASSWORD")"
  fi
  echo "sentinel monitor $MASTER_NAME $master_host $master_port $QUORUM"
  if [ -n "$ACL_RULES_DIR" ]; then
    # The sentinels' own ACL user on redis (rules in acl-sentinel.acl).
    echo "sentinel auth-user $MASTER_NAME sentinel"
    printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$(conf_quote "$SENTINEL_USER_PASSWORD")"
  elif [ -n "$REDIS_PASSWORD" ]; then printf 'sentinel auth-pass %s %s\n' "$MASTER_NAME" "$(conf_quote "$REDIS_PASSWORD")"; fi
  echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS"
  echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS"
  echo "sentinel parallel-syncs $MASTER_NAME $PARALLEL_SYNCS"
  # State from the previous run: identity, epochs and the peers it knew. A known replica at
  # the address of the master it monitors now is dropped: the sentinel would otherwise
  # "fix" that master into a replica of itself. Known replicas and sentinels on hosts that
  # are no pod of the StatefulSet any more (a scale-down: ordinals >= REPLICAS) are dropped
  # too: a sentinel never forgets a peer by itself (nothing runs SENTINEL RESET), and dead
  # sentinels it still counts raise the majority a failover needs. A change of
  # redis.replicas changes the pod template, so the rollout restarts every sentinel with the
  # new PEER_HOSTS and each one drops the removed pods here.
  if [ -f "$conf" ]; then
    awk -v m="$MASTER_NAME" -v mh="$master_host" -v mp="$master_port" -v peers=" $PEER_HOSTS " '
      function pod(h) { return index(peers, " " h " ") > 0 }
      $1 == "sentinel" && ($2 == "myid" || $2 == "current-epoch") { print; next }
      $1 == "sentinel" && $2 == "known-replica" && $3 == m && !($4 == mh && $5 == mp) && pod($4) { print; next }
      $1 == "sentinel" && $2 == "known-sentinel" && $3 == m && pod($4) { print; next }
      $1 == "sentinel" && ($2 == "config-epoch" || $2 == "leader-epoch") && $3 == m { print }
    ' "$conf"
  fi
  if [ -n "$EXTRA_CONF_FILE" ] && [ -r "$EXTRA_CONF_FILE" ]; then cat "$EXTRA_CONF_FILE"; fi
} > "$tmp"
mv "$tmp" "$conf"

if [ "$EXEC" = "1" ]; then
  exec "$REDIS_SERVER" "$conf" --sentinel
fi
cat "$conf"

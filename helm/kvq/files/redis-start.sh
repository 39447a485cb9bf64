#!/bin/sh
# Starts redis-server of one Redis pod (container `redis`).
#
# Sentinel mode: before starting, asks the sentinels which node is master (see
# discover_master in redis-lib.sh) and starts as its replica; only when no sentinel knows a
# master does the bootstrap rule apply (ordinal 0 is master on a fresh install). When the
# sentinels still name this very pod as master (its redis restarted before they failed
# over): with its data on disk it starts as master again (it holds every acknowledged
# write); with an empty volume it waits, without a deadline, until the sentinels promote
# another node (or a peer runs as master) and follows it, so an empty node never becomes
# master of a set whose other members hold data (it does when no peer holds any: fresh
# install, or every peer answering empty after SELF_MASTER_WAIT).
#
# Environment: see redis-lib.sh, plus
#   APPENDFSYNC              [everysec]
#   MIN_REPLICAS_TO_WRITE    sentinel mode only [1]
#   MIN_REPLICAS_MAX_LAG     [10]
#   MAXMEMORY                e.g. 200mb []
#   SELF_MASTER_WAIT         seconds an empty self named master waits before it asks whether
#                            every peer is empty too (then it may start as master) [30]
#   EXTRA_CONF_FILE          file appended to redis.conf []
#   EXEC                     set to 0 to print the config instead of exec'ing redis-server [1]
set -eu
SCRIPT_NAME=redis-start
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"

: "${APPENDFSYNC:=everysec}"
: "${MIN_REPLICAS_TO_WRITE:=1}"
: "${MIN_REPLICAS_MAX_LAG:=10}"
: "${MAXMEMORY:=}"
: "${SELF_MASTER_WAIT:=30}"
: "${EXTRA_CONF_FILE:=}"
: "${EXEC:=1}"

mkdir -p "$CONF_DIR" "$DATA_DIR"
# ACL mode: read now, so a missing Secret key stops the pod before anything starts.
if [ -n "$ACL_RULES_DIR" ]; then REPLICATION_PASSWORD=$(acl_password replication); fi
conf="$CONF_DIR/redis.conf"
tmp="$conf.tmp"
{
  common_conf
  if [ "$REDIS_MODE" = "sentinel" ]; then
    echo "replica-announce-ip $ANNOUNCE_HOST"
    echo "replica-announce-port $REDIS_PORT"
    echo "min-replicas-to-write $MIN_REPLICAS_TO_WRITE"
    echo "min-replicas-max-lag $MIN_REPLICAS_MAX_LAG"
  fi
  if [ -n "$EXTRA_CONF_FILE" ] && [ -r "$EXTRA_CONF_FILE" ]; then cat "$EXTRA_CONF_FILE"; fi
} > "$tmp"

if [ "$REDIS_MODE" = "sentinel" ]; then
  # shellcheck disable=SC2046 # "host port source", split on purpose
  set -- $(discover_master)
  master_host=$1 master_port=$2 source=$3
  # An empty volume never becomes master of a set whose other members hold data: its
  # replicas would full-sync the empty data set. It waits (without a deadline) until the
  # sentinels name another node or a peer runs as master, and follows it. It starts as
  # master only when that loses nothing: on a fresh install (bootstrap, no peer holds data)
  # or, after SELF_MASTER_WAIT, when every peer answers and holds no data.
  if [ "$master_host" = "$ANNOUNCE_HOST" ] && ! has_data && { [ "$source" = "sentinels" ] || [ "$source" = "bootstrap" ]; }; then
    waited=0
    while :; do
      if [ "$source" = "bootstrap" ] && ! peers_hold_data; then break; fi
      if [ "$source" = "sentinels" ] && [ "$waited" -ge "$SELF_MASTER_WAIT" ] && peers_all_empty; then break; fi
      if [ $((waited % 10)) -eq 0 ]; then
        log "named master ($source) but the volume is empty and peers may hold data: waiting for another master (${waited}s)"
      fi
      sleep 1
      waited=$((waited + 1))
      m=$(ask_sentinels)
      if [ -n "$m" ] && [ "${m% *}" != "$ANNOUNCE_HOST" ]; then
        master_host=${m% *} master_port=${m#* } source=sentinels
        break
      fi
      m=$(peer_master)
      if [ -n "$m" ]; then
        master_host=${m% *} master_port=${m#* } source=peer
        break
      fi
    done
  fi
  if [ "$master_host" = "$ANNOUNCE_HOST" ]; then
    log "starting as master (source: $source)"
  else
    log "starting as replica of $master_host:$master_port (source: $source)"
    echo "replicaof $master_host $master_port" >> "$tmp"
  fi
fi
mv "$tmp" "$conf"

if [ "$EXEC" = "1" ]; then
  exec "$REDIS_SERVER" "$conf"
fi
cat "$conf"

#!/bin/sh
# Starts redis-server of one Redis pod (container `redis`).
#
# Sentinel mode: before starting, asks the sentinels which node is master (see
# discover_master in redis-lib.sh) and starts as its replica; only when no sentinel knows a
# master does the bootstrap rule apply (ordinal 0 is master on a fresh install). When the
# sentinels still name this very pod as master (its redis restarted before they failed
# over): with its data on disk it starts as master again (it holds every acknowledged
# write); with an empty volume it waits up to DISCOVERY_TIMEOUT + failover time for the
# sentinels to promote another node, so an empty node never becomes master of a set that
# has data.
#
# Environment: see redis-lib.sh, plus
#   APPENDFSYNC              [everysec]
#   MIN_REPLICAS_TO_WRITE    sentinel mode only [1]
#   MIN_REPLICAS_MAX_LAG     [10]
#   MAXMEMORY                e.g. 200mb []
#   SELF_MASTER_WAIT         seconds to wait for a failover away from an empty self [30]
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
conf="$CONF_DIR/redis.conf"
tmp="$conf.tmp"
{
  echo "bind $BIND_ADDRESS"
  echo "port $REDIS_PORT"
  echo "dir $DATA_DIR"
  echo "protected-mode no"
  echo "appendonly yes"
  echo "appendfsync $APPENDFSYNC"
  echo "maxmemory-policy noeviction"
  if [ -n "$MAXMEMORY" ]; then echo "maxmemory $MAXMEMORY"; fi
  if [ -n "$REDIS_PASSWORD" ]; then
    printf 'requirepass %s\n' "$(conf_quote "$REDIS_PASSWORD")"
    printf 'masterauth %s\n' "$(conf_quote "$REDIS_PASSWORD")"
  fi
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
  if [ "$master_host" = "$ANNOUNCE_HOST" ] && [ "$source" = "sentinels" ] && ! has_data; then
    log "sentinels name this pod master but its volume is empty: waiting for a failover"
    waited=0
    while [ "$waited" -lt "$SELF_MASTER_WAIT" ]; do
      sleep 1
      waited=$((waited + 1))
      m=$(ask_sentinels)
      if [ -n "$m" ] && [ "${m% *}" != "$ANNOUNCE_HOST" ]; then
        master_host=${m% *} master_port=${m#* } source=sentinels
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

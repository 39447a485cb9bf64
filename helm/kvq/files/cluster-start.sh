#!/bin/sh
# Starts redis-server of one Redis Cluster pod (redis.mode=cluster, container `redis`).
#
# Redis Cluster nodes find each other by the addresses in their nodes.conf (kept on the
# volume). Pods get new IPs when they are rescheduled or all restarted at once, so before
# redis starts, every node of nodes.conf that announced a hostname (all of ours do:
# cluster-announce-hostname) gets the address its name resolves to now; a name that does not
# resolve yet keeps its address, and that pod, once up, tells the others its new one
# (cluster-announce-ip). Clients are sent hostnames (cluster-preferred-endpoint-type
# hostname), which the TLS certificate names and which survive IP changes.
#
# Creating the cluster and joining it with an empty volume happen while redis runs:
# cluster-join.sh is started in the background (it ends when its work is done or redis
# exits) and redis-server replaces this shell.
#
# Environment: see redis-lib.sh, plus
#   POD_IP                 this pod's address, announced on the cluster bus [ANNOUNCE_HOST resolved]
#   CLUSTER_BUS_PORT       cluster bus port [16379]
#   CLUSTER_NODE_TIMEOUT   ms without answer before a node is failing (failover) [5000]
#   APPENDFSYNC            [everysec]
#   MAXMEMORY              e.g. 200mb []
#   EXTRA_CONF_FILE        file appended to redis.conf []
#   EXEC                   set to 0 to print the config instead of exec'ing redis-server [1]
#   and those of cluster-join.sh.
set -eu
SCRIPT_NAME=cluster-start
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"

: "${CLUSTER_BUS_PORT:=16379}"
: "${CLUSTER_NODE_TIMEOUT:=5000}"
: "${APPENDFSYNC:=everysec}"
: "${MAXMEMORY:=}"
: "${EXTRA_CONF_FILE:=}"
: "${EXEC:=1}"

mkdir -p "$CONF_DIR" "$DATA_DIR"
if [ -n "$ACL_RULES_DIR" ]; then REPLICATION_PASSWORD=$(acl_password replication); fi
if [ -z "${POD_IP:-}" ]; then
  n=0
  while POD_IP=$(resolve_host "$ANNOUNCE_HOST") && [ -z "$POD_IP" ]; do
    n=$((n + 1))
    [ "$n" -ge 60 ] && { log "$ANNOUNCE_HOST does not resolve"; exit 1; }
    sleep 1
  done
fi

conf="$CONF_DIR/redis.conf"
tmp="$conf.tmp"
{
  common_conf
  if [ "$REDIS_TLS" = "1" ]; then echo "tls-cluster yes"; fi
  echo "cluster-enabled yes"
  echo "cluster-config-file $DATA_DIR/nodes.conf"
  echo "cluster-port $CLUSTER_BUS_PORT"
  echo "cluster-node-timeout $CLUSTER_NODE_TIMEOUT"
  echo "cluster-announce-ip $POD_IP"
  echo "cluster-announce-hostname $ANNOUNCE_HOST"
  echo "cluster-preferred-endpoint-type hostname"
  # A shard whose master and replicas are all down must not stop the others: kvq answers 503
  # only for the keys of that shard.
  echo "cluster-require-full-coverage no"
  if [ -n "$EXTRA_CONF_FILE" ] && [ -r "$EXTRA_CONF_FILE" ]; then cat "$EXTRA_CONF_FILE"; fi
} > "$tmp"
mv "$tmp" "$conf"

# old_owner: a peer that lists this pod's name under a node id (its identity before the volume
# was lost) that still owns slots.
MY_ID=""
old_owner() {
  for _h in $PEER_HOSTS; do
    [ "$_h" = "$ANNOUNCE_HOST" ] && continue
    if [ -n "$(stale_ids "$_h" slots)" ]; then echo "$_h"; return 0; fi
  done
  return 0
}

nodes="$DATA_DIR/nodes.conf"
if [ ! -s "$nodes" ]; then
  # An empty volume. If this pod was a master, its replica must take the slots over first: a
  # new node answering at this pod's address would make the peers mark the old one "noaddr",
  # which they never fail over. So redis starts only once no peer lists this pod's name as
  # the owner of slots (at once on a fresh install, where nobody knows it). Without a replica
  # to take over, it waits for an operator (chart README, "How Redis Cluster mode works").
  waited=0
  while owner=$(old_owner) && [ -n "$owner" ]; do
    if [ $((waited % 10)) -eq 0 ]; then
      log "empty volume while $owner still lists my old node id as owner of slots: waiting for its replica to take over (${waited}s)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
fi
# Addresses of nodes.conf from the names: "name address" of each pod that resolves now.
if [ -s "$nodes" ]; then
  map="$CONF_DIR/addresses"
  : > "$map"
  for h in $PEER_HOSTS; do
    if [ "$h" = "$ANNOUNCE_HOST" ]; then a=$POD_IP; else a=$(resolve_host "$h"); fi
    [ -n "$a" ] && echo "$h $a" >> "$map"
  done
  awk "$NODE_HOST_AWK"'
    NR == FNR { addr[$1] = $2; next }
    $2 ~ /@/ && (node_host($2) in addr) {
      n = split($2, p, ",")
      at = index(p[1], "@")
      hp = substr(p[1], 1, at - 1)
      match(hp, /:[0-9]+$/)
      p[1] = addr[node_host($2)] substr(hp, RSTART) substr(p[1], at)
      f = p[1]
      for (i = 2; i <= n; i++) f = f "," p[i]
      $2 = f
    }
    { print }' "$map" "$nodes" > "$nodes.tmp"
  if ! cmp -s "$nodes" "$nodes.tmp"; then log "nodes.conf: peer addresses updated from their names"; fi
  mv "$nodes.tmp" "$nodes"
  log "starting with nodes.conf ($(grep -c @ "$nodes") nodes)"
else
  log "starting without nodes.conf (new node)"
fi

if [ "$EXEC" = "1" ]; then
  REDIS_PID=$$ POD_IP=$POD_IP sh "$(dirname "$0")/cluster-join.sh" &
  exec "$REDIS_SERVER" "$conf"
fi
cat "$conf"

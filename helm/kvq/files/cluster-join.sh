#!/bin/sh
# Makes the local redis a member of the Redis Cluster (redis.mode=cluster); started in the
# background by cluster-start.sh, it ends when the node serves slots or replicates a master,
# or when redis exits. Each second it looks at what the node knows:
#
#   - a replica, or a master owning slots: a member (restarted with its nodes.conf); done.
#   - knows only itself, and a peer lists this pod's name under another node id: the pod was
#     a member and lost its volume. It meets the cluster, waits until its old identity owns no
#     slots (a master's replica has taken over), makes every node forget the old id, and
#     replicates the master with the fewest replicas (the one it served, or whose replica it
#     was). It never takes slots: a new node holds no data.
#   - knows only itself, ordinal 0, and every pod answers knowing only itself with no slot and
#     no key: a fresh install. It creates the cluster (redis-cli --cluster create, masters
#     first, CLUSTER_REPLICAS_PER_MASTER replicas each, every pod by its address).
#   - a master without slots that knows other nodes: with the marker DATA_DIR/rejoining, which
#     the empty-volume case leaves until it replicates, a rejoin interrupted by a restart: it
#     replicates as above. Without it (a node being created, or a pod added by scaling that an
#     operator joins with redis-cli --cluster add-node and rebalances) it is left alone.
# Anything else (peers down, a cluster being created) is waited out, with a log line every
# 30 s. Pods added beyond the cluster created are not joined: see the chart README, "Scaling
# the number of shards".
#
# Environment: see redis-lib.sh, plus
#   REDIS_PID                    exit when this process is gone [none]
#   POD_IP                       this pod's address [ANNOUNCE_HOST resolved]
#   CLUSTER_BUS_PORT             [16379]
#   CLUSTER_REPLICAS_PER_MASTER  replicas of each master at creation [1]
#   CLUSTER_CREATE_TIMEOUT       seconds the creation may take [120]
set -u
SCRIPT_NAME=cluster-join
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
: "${REDIS_PID:=}"
: "${CLUSTER_BUS_PORT:=16379}"
: "${CLUSTER_REPLICAS_PER_MASTER:=1}"
: "${CLUSTER_CREATE_TIMEOUT:=120}"
if [ -z "${POD_IP:-}" ]; then POD_IP=$(resolve_host "$ANNOUNCE_HOST"); fi

alive() { [ -z "$REDIS_PID" ] || kill -0 "$REDIS_PID" 2>/dev/null; }

# fresh HOST: the redis at HOST knows only itself, owns no slot and holds no key.
fresh() {
  [ "$(cluster_info "$1" cluster_known_nodes)" = "1" ] \
    && [ "$(cluster_info "$1" cluster_slots_assigned)" = "0" ] \
    && [ "$(peer_keys "$1")" = "0" ]
}

# create_cluster: redis-cli --cluster create over every pod's current address.
create_cluster() {
  _addrs=""
  for _h in $PEER_HOSTS; do
    _a=$(resolve_host "$_h")
    [ -n "$_a" ] || return 1
    case "$_a" in *:*) _a="[$_a]" ;; esac
    _addrs="$_addrs $_a:$REDIS_PORT"
  done
  log "creating the cluster:$_addrs, $CLUSTER_REPLICAS_PER_MASTER replica(s) per master"
  _t=$CLI_TIMEOUT
  CLI_TIMEOUT=$CLUSTER_CREATE_TIMEOUT
  # shellcheck disable=SC2086 # one argument per address
  rcli "$LOCAL_ADDR" --cluster create $_addrs --cluster-replicas "$CLUSTER_REPLICAS_PER_MASTER" --cluster-yes >&2
  _rc=$?
  CLI_TIMEOUT=$_t
  return $_rc
}

# seed_knowing_me: a peer that lists this pod's name under another node id.
seed_knowing_me() {
  for _h in $PEER_HOSTS; do
    [ "$_h" = "$ANNOUNCE_HOST" ] && continue
    if [ -n "$(stale_ids "$_h")" ]; then echo "$_h"; return 0; fi
  done
  return 1
}

# replicate_neediest VIEW: forgets this pod's old ids everywhere, then replicates the master
# (with slots, not failing) that has the fewest replicas, both as the redis at VIEW sees the
# cluster (the seed, which knows every node, while this node is still learning them). Fails
# while an old id still owns slots.
replicate_neediest() {
  if [ -n "$(stale_ids "$1" slots)" ]; then
    log "my old node id still owns slots: waiting for its replica to take over"
    return 1
  fi
  for _old in $(stale_ids "$1"); do
    log "forgetting my old node id $_old on every node"
    for _h in $PEER_HOSTS; do
      [ "$_h" = "$ANNOUNCE_HOST" ] && continue
      rcli "$_h" CLUSTER FORGET "$_old" > /dev/null 2>&1
    done
    rcli "$LOCAL_ADDR" CLUSTER FORGET "$_old" > /dev/null 2>&1
  done
  _m=$(cluster_nodes "$1" | awk -v me="$MY_ID" '
    $3 !~ /fail|noaddr|handshake/ && $3 ~ /master/ && NF > 8 { masters[$1] = 0 }
    $3 !~ /fail|noaddr|handshake/ && $3 ~ /slave/ && $1 != me { replicas[$4]++ }
    END {
      best = ""
      for (m in masters) {
        n = (m in replicas) ? replicas[m] : 0
        if (best == "" || n < bestn || (n == bestn && m < best)) { best = m; bestn = n }
      }
      print best
    }')
  [ -n "$_m" ] || { log "no master with slots known yet"; return 1; }
  log "replicating master $_m"
  rcli "$LOCAL_ADDR" CLUSTER REPLICATE "$_m" >&2
}

until [ "$(rcli "$LOCAL_ADDR" PING 2>/dev/null)" = "PONG" ]; do
  alive || exit 0
  sleep 1
done
MY_ID=$(rcli "$LOCAL_ADDR" CLUSTER MYID 2>/dev/null | tr -d '\r')
marker="$DATA_DIR/rejoining"
view=$LOCAL_ADDR
n=0
while alive; do
  n=$((n + 1))
  role=$(rcli "$LOCAL_ADDR" ROLE 2>/dev/null | sed -n 1p)
  known=$(cluster_info "$LOCAL_ADDR" cluster_known_nodes)
  myslots=$(cluster_nodes "$LOCAL_ADDR" | awk '$3 ~ /myself/ { print NF - 8 }')
  if [ "$role" = "slave" ] || { [ "$role" = "master" ] && [ "${myslots:-0}" -gt 0 ]; }; then
    rm -f "$marker"
    log "member of the cluster as $role ($known nodes known)"
    exit 0
  fi
  if [ "${known:-1}" = "1" ]; then
    if seed=$(seed_knowing_me); then
      seed_ip=$(resolve_host "$seed")
      log "$seed knows this pod under another node id (empty volume): meeting the cluster as $MY_ID"
      : > "$marker"
      rcli "$LOCAL_ADDR" CLUSTER MEET "$seed_ip" "$REDIS_PORT" "$CLUSTER_BUS_PORT" > /dev/null 2>&1
      view=$seed
    elif [ "$ORDINAL" = "0" ]; then
      all=1
      for h in $PEER_HOSTS; do fresh "$h" || { all=0; break; }; done
      if [ "$all" = 1 ]; then create_cluster || log "cluster creation failed; retrying"; fi
    fi
  elif [ "$role" = "master" ] && [ -f "$marker" ]; then
    # Knows others, owns no slot: a rejoin of ours in progress, or one interrupted by a restart.
    replicate_neediest "$view" || true
  fi
  if [ $((n % 30)) -eq 0 ]; then log "not a member yet (role ${role:-?}, $known nodes known)"; fi
  sleep 1
done

#!/bin/sh
# preStop hook of the `redis` container in cluster mode. On a master that owns slots it hands
# them over before the pod stops: CLUSTER FAILOVER on one of its replicas (a manual failover:
# the master stops taking writes, the replica catches up with its replication offset, then
# takes over the slots), and waits until this node is a replica. Clients see MOVED and follow
# the slots; no acknowledged write is lost and there is no node-timeout outage. On a replica,
# or when no replica is connected, it does nothing (the pod then stops as after a crash, and
# the replica takes over after the node timeout).
#
# Environment: see redis-lib.sh, plus
#   PRESTOP_TIMEOUT   seconds to wait for the failover [20]
# Worst case, with CLI_TIMEOUT c: PRESTOP_TIMEOUT + 6 c.
set -u
SCRIPT_NAME=cluster-prestop
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
: "${PRESTOP_TIMEOUT:=20}"

nodes=$(cluster_nodes "$LOCAL_ADDR")
me=$(echo "$nodes" | awk '$3 ~ /myself/ { print $1, ($3 ~ /master/ && NF > 8) ? "owner" : "other" }')
[ "${me#* }" = "owner" ] || { log "owns no slots: nothing to hand over"; exit 0; }
id=${me% *}
# A connected replica of this master: "address port" (the address the cluster knows).
replica=$(echo "$nodes" | awk -v m="$id" '$4 == m && $3 ~ /slave/ && $3 !~ /fail|noaddr/ && $8 == "connected" {
  a = $2; sub(/[@,].*/, "", a); match(a, /:[0-9]+$/)
  print substr(a, 1, RSTART - 1), substr(a, RSTART + 1); exit }')
[ -n "$replica" ] || { log "master without a connected replica: nothing to hand over to"; exit 0; }
log "handing the slots over: CLUSTER FAILOVER on replica $replica"
rcli "${replica% *}" CLUSTER FAILOVER >&2 || { log "CLUSTER FAILOVER refused"; exit 0; }
waited=0
while [ "$waited" -lt "$PRESTOP_TIMEOUT" ]; do
  if [ "$(rcli "$LOCAL_ADDR" ROLE 2>/dev/null | sed -n 1p)" = "slave" ]; then
    log "replica now; the slots moved to $replica after ${waited}s"
    exit 0
  fi
  sleep 1
  waited=$((waited + 1))
done
log "no failover within ${PRESTOP_TIMEOUT}s; stopping as master"

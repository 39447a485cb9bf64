#!/bin/sh
# preStop hook of the `redis` container. On the master (sentinel mode) it hands mastership
# over before the pod stops, so a rollout or a node drain loses no acknowledged write:
#   0. wait until the sentinels know every online replica (else the failover skips it);
#   1. pause client writes (CLIENT PAUSE WRITE) so nothing new lands on this node;
#   2. wait until every replica has caught up with the master's replication offset (the
#      sentinels pick the replica to promote from offsets up to 10 s old, so any of them
#      may be chosen);
#   3. ask a sentinel (peers first) for SENTINEL FAILOVER;
#   4. wait until the sentinels name another node and it answers as master;
#   5. make this node a replica of it, then unpause (paused writes now fail with READONLY
#      and the app re-resolves the master), and wait until the other pods' sentinels name the new
#      master, so this pod, restarting, does not find the sentinels split.
# When the failover is not seen through, writes stay paused until the pod stops: a failover
# finishing later would drop whatever this node took meanwhile. On a replica, or in
# standalone mode, it does nothing.
#
# Environment: see redis-lib.sh, plus
#   PRESTOP_TIMEOUT         seconds to wait for the failover [30]
#   PRESTOP_SENTINEL_WAIT   seconds to wait until the sentinels know every replica [15]
#   PRESTOP_CATCHUP_WAIT    seconds to wait for a replica to catch up [5]
# Worst case, with R pods and CLI_TIMEOUT c: SENTINEL_WAIT + CATCHUP_WAIT + PRESTOP_TIMEOUT
# + c * (R + 10) (R failover requests, ROLE, INFO, CLIENT PAUSE, REPLICAOF, UNPAUSE and one
# overrunning call per wait loop; the wait for every sentinel shares PRESTOP_TIMEOUT's
# deadline); the chart keeps terminationGracePeriodSeconds above it.
set -u
SCRIPT_NAME=redis-prestop
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
: "${PRESTOP_TIMEOUT:=30}"
: "${PRESTOP_SENTINEL_WAIT:=15}"
: "${PRESTOP_CATCHUP_WAIT:=5}"

[ "$REDIS_MODE" = "sentinel" ] || exit 0
role=$(rcli "$LOCAL_ADDR" ROLE 2>/dev/null | sed -n 1p)
[ "$role" = "master" ] || { log "role '${role:-unknown}': nothing to hand over"; exit 0; }

info=$(rcli "$LOCAL_ADDR" INFO replication 2>/dev/null | tr -d '\r')
connected=$(echo "$info" | sed -n 's/^connected_slaves://p')
if [ "${connected:-0}" -eq 0 ]; then
  log "master without connected replicas: no failover possible"
  exit 0
fi

# 0. every online replica known to every reachable sentinel (they learn replicas from the
#    master's INFO every 10 s); a replica unknown to the sentinel that runs the failover
#    would keep following this node.
deadline=$(( $(date +%s) + PRESTOP_SENTINEL_WAIT ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  unknown=0
  for r in $(online_replicas | tr ' ' ':'); do
    for h in $PEER_HOSTS; do
      scli "$h" PING >/dev/null 2>&1 || continue
      sentinel_lists_replica "${r%:*}" "${r#*:}" "$h" || unknown=$((unknown + 1))
    done
  done
  [ "$unknown" -eq 0 ] && break
  sleep 0.5
done

# Past the hook's end: a pause left on (failover not seen through) must last until SIGTERM.
pause_ms=$(( (PRESTOP_CATCHUP_WAIT + PRESTOP_TIMEOUT + 60) * 1000 ))
rcli "$LOCAL_ADDR" CLIENT PAUSE "$pause_ms" WRITE >/dev/null 2>&1 || log "CLIENT PAUSE failed"

# 2. every replica in sync: each slaveN line online at offset master_repl_offset.
deadline=$(( $(date +%s) + PRESTOP_CATCHUP_WAIT ))
behind=""
while :; do
  info=$(rcli "$LOCAL_ADDR" INFO replication 2>/dev/null | tr -d '\r')
  moff=$(echo "$info" | sed -n 's/^master_repl_offset://p')
  behind=$(echo "$info" | grep '^slave[0-9]*:' | grep -v "state=online,offset=$moff," | sed 's/^slave[0-9]*:ip=\([^,]*\),port=\([0-9]*\),.*/\1:\2/')
  [ -z "$behind" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || break
  sleep 0.2
done
[ -z "$behind" ] || log "replicas not caught up after ${PRESTOP_CATCHUP_WAIT}s: $(echo "$behind" | tr '\n' ' ')"

# 3. failover through the sentinels, other pods' first.
asked=""
for h in $PEER_HOSTS; do
  [ "$h" = "$ANNOUNCE_HOST" ] && continue
  if scli "$h" SENTINEL FAILOVER "$MASTER_NAME" 2>/dev/null | grep -q '^OK'; then asked=$h; break; fi
done
if [ -z "$asked" ] && scli "$LOCAL_ADDR" SENTINEL FAILOVER "$MASTER_NAME" 2>/dev/null | grep -q '^OK'; then asked=local; fi
if [ -z "$asked" ]; then
  log "no sentinel accepted SENTINEL FAILOVER: writes stay paused until the pod stops"
  exit 0
fi
log "failover requested from sentinel $asked"

# 4. wait for the new master.
deadline=$(( $(date +%s) + PRESTOP_TIMEOUT ))
new=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  m=$(ask_sentinels)
  if [ -n "$m" ] && [ "${m% *}" != "$ANNOUNCE_HOST" ]; then
    if [ "$(rcli "${m% *}" ROLE 2>/dev/null | sed -n 1p)" = "master" ]; then new=$m; break; fi
  fi
  sleep 0.5
done

if [ -z "$new" ]; then
  log "no new master within ${PRESTOP_TIMEOUT}s: writes stay paused until the pod stops"
  exit 0
fi

# 5. follow it, let paused clients go (they get READONLY and re-resolve), then wait until
#    every sentinel that answers names it.
rcli "$LOCAL_ADDR" REPLICAOF "${new% *}" "${new#* }" >/dev/null 2>&1
rcli "$LOCAL_ADDR" CLIENT UNPAUSE >/dev/null 2>&1
log "handed over to $new"
while [ "$(date +%s)" -lt "$deadline" ]; do
  stale=0
  for h in $PEER_HOSTS; do
    [ "$h" = "$ANNOUNCE_HOST" ] && continue
    [ "$(date +%s)" -lt "$deadline" ] || break
    named=$(scli "$h" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | tr -d '\r' | tr '\n' ' ') || continue
    [ -z "$named" ] || [ "$named" = "${new% *} ${new#* } " ] || stale=$((stale + 1))
  done
  [ "$stale" -eq 0 ] && break
  sleep 0.5
done
exit 0

# shellcheck shell=sh
# Shared functions of the Redis/Sentinel/Cluster pod scripts (POSIX sh; runs on the official
# redis image, where sh is dash). Sourced by redis-start.sh, sentinel-start.sh,
# redis-prestop.sh, sentinel-prestop.sh, cluster-start.sh, cluster-join.sh,
# cluster-prestop.sh and redis-probe.sh. Outside Kubernetes (tests) every input comes from
# the environment; nothing here reads /etc/hosts or the Kubernetes API.
#
# Environment (defaults in brackets):
#   REDIS_MODE            sentinel | standalone | cluster [sentinel]
#   POD_NAME              this pod's name, ending in -<ordinal> [$(hostname)]
#   ORDINAL               this pod's ordinal [suffix of POD_NAME]
#   STATEFULSET_NAME      name of the StatefulSet [POD_NAME without -<ordinal>]
#   REPLICAS              pods in the StatefulSet [3]
#   HEADLESS_DOMAIN       <headless-svc>.<ns>.svc.<cluster-domain> []
#   ANNOUNCE_HOST         stable name of this pod announced to peers [POD_NAME.HEADLESS_DOMAIN]
#   PEER_HOSTS            stable names of all pods, ordinal order, space-separated
#                         [STATEFULSET_NAME-i.HEADLESS_DOMAIN for i in 0..REPLICAS-1]
#   LOCAL_ADDR            address at which this pod reaches its own redis/sentinel [127.0.0.1]
#   BIND_ADDRESS          redis/sentinel `bind` [* -::*]
#   REDIS_PORT            [6379]          SENTINEL_PORT   [26379]
#   MASTER_NAME           sentinel master set name [mymaster]
#   REDIS_PASSWORD        or REDIS_PASSWORD_FILE: password of redis (empty: no auth; a
#                         REDIS_PASSWORD_FILE that is set but unreadable exits with 1)
#   SENTINEL_PASSWORD     or SENTINEL_PASSWORD_FILE: password of the sentinels (same rules)
#   REDIS_EXTRA_PASSWORD  or REDIS_EXTRA_PASSWORD_FILE: a second password redis accepts
#                         (nobody uses it; a password rotation without downtime) []
#   REDIS_USER            ACL user the scripts authenticate as on redis (with REDIS_PASSWORD);
#                         empty: the default user []
#   ACL_RULES_DIR         ACL mode: directory of acl-<user>.acl files (the rules of each
#                         user redis-start.sh creates; the default user is then off) []
#   ACL_PASSWORD_DIR      ACL mode: directory of acl-<user> password files [ACL_RULES_DIR]
#   REDIS_TLS             1: redis and the sentinels listen with TLS only (port 0, tls-port),
#                         replicate over TLS, and every redis-cli call uses TLS [0]
#   TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE  the pod's certificate, key and CA (PEM)
#   TLS_AUTH_CLIENTS      tls-auth-clients: yes (mutual TLS) | optional | no [no]; with yes
#                         redis-cli presents TLS_CERT_FILE
#   DATA_DIR              redis data (AOF) and persisted sentinel.conf [/data]
#   CONF_DIR              writable directory for the generated redis.conf [/run/redis]
#   DISCOVERY_TIMEOUT     seconds a starting pod keeps asking the sentinels [10]
#   CLI_TIMEOUT           seconds for one redis-cli call [3]
#   REDIS_SERVER          redis-server command [redis-server]
#   REDIS_CLI             redis-cli command [redis-cli]

: "${REDIS_MODE:=sentinel}"
: "${POD_NAME:=$(hostname)}"
: "${ORDINAL:=${POD_NAME##*-}}"
: "${STATEFULSET_NAME:=${POD_NAME%-*}}"
: "${REPLICAS:=3}"
: "${HEADLESS_DOMAIN:=}"
: "${LOCAL_ADDR:=127.0.0.1}"
: "${BIND_ADDRESS:=* -::*}"
: "${REDIS_PORT:=6379}"
: "${SENTINEL_PORT:=26379}"
: "${MASTER_NAME:=mymaster}"
: "${DATA_DIR:=/data}"
: "${CONF_DIR:=/run/redis}"
: "${DISCOVERY_TIMEOUT:=10}"
: "${CLI_TIMEOUT:=3}"
: "${REDIS_SERVER:=redis-server}"
: "${REDIS_CLI:=redis-cli}"
: "${REDIS_USER:=}"
: "${ACL_RULES_DIR:=}"
: "${ACL_PASSWORD_DIR:=$ACL_RULES_DIR}"
: "${REDIS_TLS:=0}"
: "${TLS_CERT_FILE:=}"
: "${TLS_KEY_FILE:=}"
: "${TLS_CA_FILE:=}"
: "${TLS_AUTH_CLIENTS:=no}"

# pod_host I: stable name of the pod with ordinal I.
pod_host() {
  if [ -n "$HEADLESS_DOMAIN" ]; then echo "$STATEFULSET_NAME-$1.$HEADLESS_DOMAIN"; else echo "$STATEFULSET_NAME-$1"; fi
}

if [ -z "${ANNOUNCE_HOST:-}" ]; then ANNOUNCE_HOST=$(pod_host "$ORDINAL"); fi
if [ -z "${PEER_HOSTS:-}" ]; then
  PEER_HOSTS=""
  _i=0
  while [ "$_i" -lt "$REPLICAS" ]; do PEER_HOSTS="$PEER_HOSTS $(pod_host "$_i")"; _i=$((_i + 1)); done
fi

# Password files are read byte for byte, trailing newlines included (`cat f; printf x`, then
# the x stripped): a plain `$(cat f)` strips them while kvq and the exporter get the Secret's
# bytes unchanged through env. Passwords are data: they go through variables and
# printf '%s' only, never `echo`, which interprets backslashes in dash.

# A *_FILE that is set must be readable: a Secret missing a key must stop the pod, never start
# redis or sentinel without a password.
if [ -z "${REDIS_PASSWORD:-}" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
    echo "${SCRIPT_NAME:-redis}: REDIS_PASSWORD_FILE=$REDIS_PASSWORD_FILE is not readable (is the key missing from the Secret?); refusing to run without the password" >&2
    exit 1
  fi
  REDIS_PASSWORD=$(cat "$REDIS_PASSWORD_FILE"; printf x)
  REDIS_PASSWORD=${REDIS_PASSWORD%x}
fi
if [ -z "${SENTINEL_PASSWORD:-}" ] && [ -n "${SENTINEL_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$SENTINEL_PASSWORD_FILE" ]; then
    echo "${SCRIPT_NAME:-redis}: SENTINEL_PASSWORD_FILE=$SENTINEL_PASSWORD_FILE is not readable (is the key missing from the Secret?); refusing to run without the password" >&2
    exit 1
  fi
  SENTINEL_PASSWORD=$(cat "$SENTINEL_PASSWORD_FILE"; printf x)
  SENTINEL_PASSWORD=${SENTINEL_PASSWORD%x}
fi
if [ -n "${REDIS_EXTRA_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$REDIS_EXTRA_PASSWORD_FILE" ]; then
    echo "${SCRIPT_NAME:-redis}: REDIS_EXTRA_PASSWORD_FILE=$REDIS_EXTRA_PASSWORD_FILE is not readable" >&2
    exit 1
  fi
  REDIS_EXTRA_PASSWORD=$(cat "$REDIS_EXTRA_PASSWORD_FILE"; printf x)
  REDIS_EXTRA_PASSWORD=${REDIS_EXTRA_PASSWORD%x}
fi
: "${REDIS_PASSWORD:=}"
: "${REDIS_EXTRA_PASSWORD:=}"
: "${SENTINEL_PASSWORD:=}"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ${SCRIPT_NAME:-redis} [$ANNOUNCE_HOST]: $*" >&2; }

# read_secret FILE: the file's bytes, trailing newlines included (see above); exits when the
# file is not readable (a Secret missing a key must stop the pod).
read_secret() {
  if [ ! -r "$1" ]; then
    echo "${SCRIPT_NAME:-redis}: $1 is not readable (is the key missing from the Secret?)" >&2
    exit 1
  fi
  _secret=$(cat "$1"; printf x)
  printf '%s' "${_secret%x}"
}

# TLS options of every redis-cli call: verify the server against the CA; present the pod's
# certificate when the servers require one.
CLI_TLS=""
if [ "$REDIS_TLS" = "1" ]; then
  CLI_TLS="--tls --cacert $TLS_CA_FILE"
  if [ "$TLS_AUTH_CLIENTS" != "no" ]; then CLI_TLS="$CLI_TLS --cert $TLS_CERT_FILE --key $TLS_KEY_FILE"; fi
fi

# cli HOST PORT USER PASSWORD ARGS...: one redis-cli call, bounded in time; the password
# travels in REDISCLI_AUTH, never on the command line.
cli() {
  _h=$1 _p=$2 _u=$3 _pw=$4
  shift 4
  # shellcheck disable=SC2086 # CLI_TLS is a list of options
  if [ -n "$_pw" ] && [ -n "$_u" ]; then
    REDISCLI_AUTH=$_pw timeout "$CLI_TIMEOUT" "$REDIS_CLI" $CLI_TLS -h "$_h" -p "$_p" --user "$_u" "$@"
  elif [ -n "$_pw" ]; then
    REDISCLI_AUTH=$_pw timeout "$CLI_TIMEOUT" "$REDIS_CLI" $CLI_TLS -h "$_h" -p "$_p" "$@"
  else
    timeout "$CLI_TIMEOUT" "$REDIS_CLI" $CLI_TLS -h "$_h" -p "$_p" "$@"
  fi
}
rcli() { _rh=$1; shift; cli "$_rh" "$REDIS_PORT" "$REDIS_USER" "$REDIS_PASSWORD" "$@"; }
scli() { _sh=$1; shift; cli "$_sh" "$SENTINEL_PORT" "" "$SENTINEL_PASSWORD" "$@"; }

# tls_conf PORT: the redis.conf/sentinel.conf lines of a TLS-only listener on PORT.
tls_conf() {
  echo "port 0"
  echo "tls-port $1"
  echo "tls-cert-file $TLS_CERT_FILE"
  echo "tls-key-file $TLS_KEY_FILE"
  echo "tls-ca-cert-file $TLS_CA_FILE"
  echo "tls-auth-clients $TLS_AUTH_CLIENTS"
  echo "tls-replication yes"
}

# acl_password USER: the password of ACL user USER.
acl_password() { read_secret "$ACL_PASSWORD_DIR/acl-$1"; }

# acl_users_conf: a `user` line per acl-<user>.acl file in ACL_RULES_DIR (comment lines
# dropped, rule lines joined), and the default user off.
acl_users_conf() {
  echo "user default off"
  for _f in "$ACL_RULES_DIR"/acl-*.acl; do
    [ -r "$_f" ] || continue
    _u=$(basename "$_f" .acl)
    _u=${_u#acl-}
    _pw=$(acl_password "$_u") || exit 1
    _rules=$(grep -v '^#' "$_f" | tr '\n' ' ')
    printf 'user %s on resetpass %s %s\n' "$_u" "$(conf_quote ">$_pw")" "$_rules"
  done
}

# ask_sentinels: prints "host port" of the master most reachable sentinels name, or nothing.
ask_sentinels() {
  _answers=""
  for _h in $PEER_HOSTS; do
    _out=$(scli "$_h" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) || continue
    _mh=$(echo "$_out" | sed -n 1p)
    _mp=$(echo "$_out" | sed -n 2p)
    case "$_mp" in ''|*[!0-9]*) continue ;; esac
    [ -n "$_mh" ] || continue
    _answers="$_answers$_mh $_mp
"
  done
  [ -n "$_answers" ] || return 0
  printf '%s' "$_answers" | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2, $3 }'
}

# persisted_master: the master named by this pod's sentinel.conf from its previous run.
persisted_master() {
  [ -f "$DATA_DIR/sentinel.conf" ] || return 0
  awk -v m="$MASTER_NAME" '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $4, $5; exit }' "$DATA_DIR/sentinel.conf"
}

# peer_master: a peer redis (not this pod) that reports role master, or nothing.
peer_master() {
  for _h in $PEER_HOSTS; do
    [ "$_h" = "$ANNOUNCE_HOST" ] && continue
    _role=$(rcli "$_h" ROLE 2>/dev/null | sed -n 1p) || continue
    if [ "$_role" = "master" ]; then echo "$_h $REDIS_PORT"; return 0; fi
  done
}

# discover_master: the master this pod must follow, as "host port source". Sources, in order:
#   sentinels  - what the running sentinels say (asked repeatedly for DISCOVERY_TIMEOUT
#                seconds when this pod has persisted sentinel state, i.e. it was part of a
#                running set, else twice);
#   persisted  - this pod's own sentinel.conf from its previous run;
#   peer       - a peer redis that already runs as master;
#   bootstrap  - nobody knows a master: ordinal 0 is the master (fresh install).
#   With argument "quick" the sentinels are asked twice only: a starting sentinel must not
#   wait for peers that may themselves be starting (all pods restarted at once).
discover_master() {
  _tries=2
  if [ -f "$DATA_DIR/sentinel.conf" ] && [ "${1:-}" != "quick" ]; then _tries=$DISCOVERY_TIMEOUT; fi
  _n=0
  while [ "$_n" -lt "$_tries" ]; do
    _m=$(ask_sentinels)
    if [ -n "$_m" ]; then echo "$_m sentinels"; return 0; fi
    _n=$((_n + 1))
    [ "$_n" -lt "$_tries" ] && sleep 1
  done
  _m=$(persisted_master)
  if [ -n "$_m" ]; then echo "$_m persisted"; return 0; fi
  _m=$(peer_master)
  if [ -n "$_m" ]; then echo "$_m peer"; return 0; fi
  echo "$(echo "$PEER_HOSTS" | awk '{ print $1 }') $REDIS_PORT bootstrap"
}

# has_data: this pod's redis has data from an earlier run.
has_data() {
  [ -f "$DATA_DIR/dump.rdb" ] && return 0
  [ -d "$DATA_DIR/appendonlydir" ] && [ -n "$(ls -A "$DATA_DIR/appendonlydir" 2>/dev/null)" ]
}

# peer_keys HOST: the number of keys peer HOST's redis holds, or nothing when it does not answer.
peer_keys() {
  _k=$(rcli "$1" DBSIZE 2>/dev/null | tr -d '\r') || return 0
  case "$_k" in ''|*[!0-9]*) return 0 ;; esac
  echo "$_k"
}

# peers_hold_data: some peer redis answers with at least one key.
peers_hold_data() {
  for _h in $PEER_HOSTS; do
    [ "$_h" = "$ANNOUNCE_HOST" ] && continue
    _k=$(peer_keys "$_h")
    [ -n "$_k" ] && [ "$_k" -gt 0 ] && return 0
  done
  return 1
}

# peers_all_empty: every peer redis answers, with no key.
peers_all_empty() {
  for _h in $PEER_HOSTS; do
    [ "$_h" = "$ANNOUNCE_HOST" ] && continue
    [ "$(peer_keys "$_h")" = "0" ] || return 1
  done
  return 0
}

# sentinel_lists_replica HOST PORT [SENTINEL_HOST]: the sentinel (local by default) knows
# HOST:PORT as a replica of MASTER_NAME. A replica a sentinel does not know is left out of a
# failover and would keep following the old master (a chain nobody repairs).
sentinel_lists_replica() {
  scli "${3:-$LOCAL_ADDR}" SENTINEL REPLICAS "$MASTER_NAME" 2>/dev/null | tr -d '\r' | grep -qx "$1:$2"
}

# online_replicas: "host port" of each replica the local master reports online.
online_replicas() {
  rcli "$LOCAL_ADDR" INFO replication 2>/dev/null | tr -d '\r' \
    | sed -n 's/^slave[0-9]*:ip=\([^,]*\),port=\([0-9]*\),state=online.*/\1 \2/p'
}

# conf_quote VALUE: VALUE as a double-quoted redis.conf/sentinel.conf string in which every
# byte is a \xHH escape, so any byte string (quotes, backslashes, #, newlines; no NUL) reaches
# redis exactly. Print the result with printf '%s', never echo (dash's echo eats backslashes).
conf_quote() {
  printf '"'
  printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n' | sed 's/../\\x&/g'
  printf '"'
}

# common_conf: the redis.conf lines every Redis pod shares (sentinel, standalone and cluster
# mode): listener (TLS or plain), data dir, AOF, noeviction, memory limit, and the users and
# passwords. The caller sets APPENDFSYNC, MAXMEMORY and, with ACL users,
# REPLICATION_PASSWORD.
common_conf() {
  echo "bind $BIND_ADDRESS"
  if [ "$REDIS_TLS" = "1" ]; then tls_conf "$REDIS_PORT"; else echo "port $REDIS_PORT"; fi
  echo "dir $DATA_DIR"
  echo "protected-mode no"
  echo "appendonly yes"
  echo "appendfsync $APPENDFSYNC"
  echo "maxmemory-policy noeviction"
  if [ -n "$MAXMEMORY" ]; then echo "maxmemory $MAXMEMORY"; fi
  if [ -n "$ACL_RULES_DIR" ]; then
    # ACL users, each with its own password and rules; replicas authenticate as `replication`.
    acl_users_conf
    echo "masteruser replication"
    printf 'masterauth %s\n' "$(conf_quote "$REPLICATION_PASSWORD")"
  elif [ -n "$REDIS_PASSWORD" ] && [ -n "$REDIS_EXTRA_PASSWORD" ]; then
    # Two accepted passwords (a rotation): the default user gets both; everyone uses
    # REDIS_PASSWORD (replication, sentinels, probes, kvq).
    printf 'user default on resetpass %s %s ~* &* +@all\n' \
      "$(conf_quote ">$REDIS_PASSWORD")" "$(conf_quote ">$REDIS_EXTRA_PASSWORD")"
    printf 'masterauth %s\n' "$(conf_quote "$REDIS_PASSWORD")"
  elif [ -n "$REDIS_PASSWORD" ]; then
    printf 'requirepass %s\n' "$(conf_quote "$REDIS_PASSWORD")"
    printf 'masterauth %s\n' "$(conf_quote "$REDIS_PASSWORD")"
  fi
}

# ---- Redis Cluster (REDIS_MODE=cluster) ----

# resolve_host NAME: the first address NAME resolves to now (an address is returned as is),
# or nothing. A pod's stable name keeps pointing at it when its IP changes.
resolve_host() {
  getent ahosts "$1" 2>/dev/null | awk 'NR == 1 { print $1 }'
}

# cluster_info HOST FIELD: FIELD of CLUSTER INFO of the redis at HOST (nothing when it does
# not answer).
cluster_info() {
  rcli "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# cluster_nodes HOST: CLUSTER NODES of the redis at HOST, one node a line:
#   <id> <ip>:<port>@<bus-port>[,<hostname>[,<aux>=<value>...]] <flags> <master-id> <ping>
#   <pong> <epoch> <link> [<slot ranges>...]
cluster_nodes() {
  rcli "$1" CLUSTER NODES 2>/dev/null | tr -d '\r'
}

# node_host: awk function text returning the hostname of a CLUSTER NODES / nodes.conf address
# field ("" when the node announced none).
NODE_HOST_AWK='function node_host(a,   n, p) { n = split(a, p, ","); return (n >= 2 && p[2] !~ /=/) ? p[2] : "" }'

# stale_ids HOST: ids that the redis at HOST lists under this pod's name (ANNOUNCE_HOST) other
# than MY_ID: this pod's identities from before it lost its volume. With "slots" as second
# argument, only those still owning slots.
stale_ids() {
  cluster_nodes "$1" | awk -v me="$ANNOUNCE_HOST" -v id="$MY_ID" -v slots="${2:-}" "$NODE_HOST_AWK"'
    node_host($2) == me && $1 != id && (slots == "" || NF > 8) { print $1 }'
}

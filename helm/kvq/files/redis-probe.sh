#!/bin/sh
# Exec probe of the redis and sentinel containers: `redis-probe.sh redis|sentinel`.
# Succeeds when the process answers PING (a loading redis answers LOADING and fails).
# Environment: see redis-lib.sh.
set -u
SCRIPT_NAME=redis-probe
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
case "${1:-redis}" in
  sentinel) out=$(scli "$LOCAL_ADDR" PING 2>&1) ;;
  *) out=$(rcli "$LOCAL_ADDR" PING 2>&1) ;;
esac
[ "$out" = "PONG" ] || { echo "$out" >&2; exit 1; }

#!/bin/sh
# preStop hook of the `sentinel` container: keeps this pod's sentinel running while the
# redis container's preStop hands mastership over (both hooks start together), i.e. waits
# while the local redis is still master, at most PRESTOP_TIMEOUT seconds.
# Environment: see redis-lib.sh, plus PRESTOP_TIMEOUT [30].
set -u
SCRIPT_NAME=sentinel-prestop
# shellcheck source=redis-lib.sh
. "$(dirname "$0")/redis-lib.sh"
: "${PRESTOP_TIMEOUT:=30}"

deadline=$(( $(date +%s) + PRESTOP_TIMEOUT ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  role=$(rcli "$LOCAL_ADDR" ROLE 2>/dev/null | sed -n 1p)
  [ "$role" = "master" ] || exit 0
  sleep 1
done
exit 0

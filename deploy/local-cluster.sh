#!/usr/bin/env bash
# Starts (or stops) a local cluster for development: three routers joined by
# Raft on 127.0.0.11-13 and two gateways on 127.0.0.2-3 that know all of
# them, with their data and logs in DIR. `start` waits until the routers
# have a leader and every gateway is linked, then prints one line per
# endpoint.
#
#   deploy/local-cluster.sh start DIR   # router-N grpc ADDR pid PID / gateway-N mqtt ADDR pid PID
#   deploy/local-cluster.sh stop DIR    # TERM to each, waits until all have exited
#
# `stop` gives the processes LOCAL_CLUSTER_STOP_SECONDS [30] to finish
# (a leading router hands leadership over first); any still running then
# are killed and named, and `stop` fails.
#
# Router ports: LOCAL_CLUSTER_PORT [7400] + node id; LOCAL_CLUSTER_ROUTERS
# [3] routers (1 to 3: one is a cluster of one router). Each gateway also
# serves its operations endpoints (/metrics, /healthz, /readyz) on a free
# port of its address, named in gateway-N.log ("ops=ADDR").
set -euo pipefail
command=${1:-}
dir=${2:-}
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
herald=${LOCAL_CLUSTER_BIN:-}
if [ -z "$herald" ]; then
  cd "$(dirname "$0")/.."
  cargo build --release --quiet
  herald="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
  cd - >/dev/null
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

wait_for() { # file needle
  for _ in $(seq 1 150); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -m1 "$2" "$1"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" >&2
  return 1
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }

case "$command" in
  start)
    port=${LOCAL_CLUSTER_PORT:-7400}
    routers=${LOCAL_CLUSTER_ROUTERS:-3}
    case "$routers" in 1 | 2 | 3) ;; *) echo "LOCAL_CLUSTER_ROUTERS: 1, 2 or 3" >&2; exit 2 ;; esac
    peers=""
    urls=""
    for n in $(seq 1 "$routers"); do
      peers="$peers${peers:+,}$n=127.0.0.1$n:$((port + n))"
      urls="$urls${urls:+,}http://127.0.0.1$n:$((port + n))"
    done
    for n in $(seq 1 "$routers"); do
      NO_COLOR=1 "$herald" router --node-id "$n" --grpc "127.0.0.1$n:$((port + n))" --peers "$peers" \
        --cluster-id local --data "$dir/router-$n" >"$dir/router-$n.log" 2>&1 &
      echo $! >"$dir/router-$n.pid"
    done
    for n in $(seq 1 "$routers"); do
      line=$(wait_for "$dir/router-$n.log" listening)
      echo "router-$n grpc $(echo "$line" | field grpc) pid $(cat "$dir/router-$n.pid")"
    done
    for n in 1 2; do
      NO_COLOR=1 "$herald" gateway --router "$urls" --cluster-id local --mqtt "127.0.0.$((n + 1)):0" \
        --ops "127.0.0.$((n + 1)):0" --node-id "$n" >"$dir/gateway-$n.log" 2>&1 &
      echo $! >"$dir/gateway-$n.pid"
      line=$(wait_for "$dir/gateway-$n.log" listening)
      echo "gateway-$n mqtt $(echo "$line" | field mqtt) pid $(cat "$dir/gateway-$n.pid")"
    done
    ;;
  stop)
    pids=""
    for name in gateway-1 gateway-2 router-1 router-2 router-3; do
      if [ -f "$dir/$name.pid" ]; then
        pid=$(cat "$dir/$name.pid")
        kill -TERM "$pid" 2>/dev/null && pids="$pids $name:$pid"
        rm -f "$dir/$name.pid"
      fi
    done
    deadline=$((SECONDS + ${LOCAL_CLUSTER_STOP_SECONDS:-30}))
    while :; do
      running=""
      for entry in $pids; do
        state=$(ps -o stat= -p "${entry#*:}" 2>/dev/null || true)
        case "$state" in "" | Z*) ;; *) running="$running $entry" ;; esac
      done
      [ -z "$running" ] && break
      if [ "$SECONDS" -ge "$deadline" ]; then
        for entry in $running; do kill -KILL "${entry#*:}" 2>/dev/null || true; done
        echo "still running after ${LOCAL_CLUSTER_STOP_SECONDS:-30} s, killed:$running" >&2
        exit 1
      fi
      sleep 0.1
    done
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac

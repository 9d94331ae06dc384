#!/usr/bin/env bash
# Starts (or stops) a local cluster for development: one router and two
# gateways on 127.0.0.x, with their data and logs in DIR.
#
#   deploy/local-cluster.sh start DIR   # prints one line per endpoint
#   deploy/local-cluster.sh stop DIR
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
    NO_COLOR=1 "$herald" router --grpc 127.0.0.1:0 --data "$dir/router-1" >"$dir/router-1.log" 2>&1 &
    echo $! >"$dir/router-1.pid"
    line=$(wait_for "$dir/router-1.log" listening)
    grpc=$(echo "$line" | field grpc)
    echo "router-1 grpc $grpc pid $(cat "$dir/router-1.pid")"
    for n in 1 2; do
      NO_COLOR=1 "$herald" gateway --router "http://$grpc" --mqtt "127.0.0.$((n + 1)):0" --node-id "$n" \
        >"$dir/gateway-$n.log" 2>&1 &
      echo $! >"$dir/gateway-$n.pid"
      line=$(wait_for "$dir/gateway-$n.log" listening)
      echo "gateway-$n mqtt $(echo "$line" | field mqtt) pid $(cat "$dir/gateway-$n.pid")"
    done
    ;;
  stop)
    for name in gateway-1 gateway-2 router-1; do
      if [ -f "$dir/$name.pid" ]; then
        kill -TERM "$(cat "$dir/$name.pid")" 2>/dev/null || true
        rm -f "$dir/$name.pid"
      fi
    done
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac

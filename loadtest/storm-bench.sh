#!/usr/bin/env bash
# A reconnect storm of persistent clients across processes: one router,
# GATEWAYS gateways on 127.0.0.2.., and as many `herald loadtest storm`
# processes (one per gateway, its own source address), which connect
# CLIENTS / GATEWAYS persistent MQTT 5 sessions each, drop every socket at
# the same wall-clock moment (a TCP reset: a gateway restart as devices see
# it) and reconnect at once. Prints each generator's summary, the time
# until the last client of all was back, and the Raft entries the router
# wrote for the whole run (connect, storm, leave) per session event.
#
#   loadtest/storm-bench.sh [CLIENTS=100000] [GATEWAYS=6]
#
# HERALD_BIN: the herald binary [target/release/herald]. A benchmark, not a
# test: it needs a release build and about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${1:-100000}
GATEWAYS=${2:-6}
BIN=${HERALD_BIN:-${CARGO_TARGET_DIR:-target}/release/herald}
PER=$((CLIENTS / GATEWAYS))
dir=$(mktemp -d /tmp/herald-storm-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_line() {
  local file=$1 pattern=$2
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "$pattern" "$file" 2>/dev/null); then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "no '$pattern' in $file" >&2
  cat "$file" >&2
  return 1
}
field() { sed -E "s/.* $1=([^ ]+).*/\1/"; }
last_log() { "$BIN" ctl cluster status --routers "http://$grpc" | awk 'NR == 2 { print $5 }'; }

echo "max_connections = $((PER + 1000))" >"$dir/gateway.toml"
NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" router --grpc 127.0.0.1:0 --data "$dir/router" >"$dir/router.log" 2>&1 &
pids+=($!)
router_pid=$!
line=$(wait_line "$dir/router.log" "listening")
grpc=$(echo "$line" | field grpc)
cluster=$(echo "$line" | field cluster)
gateway_pids=()
for i in $(seq 1 "$GATEWAYS"); do
  NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" gateway --router "http://$grpc" --cluster-id "$cluster" \
    --mqtt "127.0.0.$((i + 1)):1883" --node-id "$i" --config "$dir/gateway.toml" >"$dir/gateway-$i.log" 2>&1 &
  pids+=($!)
  gateway_pids+=($!)
done
for i in $(seq 1 "$GATEWAYS"); do wait_line "$dir/gateway-$i.log" "listening" >/dev/null; done

before=$(last_log)
# Every generator connects its clients first; they all storm at the same time.
storm_at=$(( $(date +%s%3N) + 60000 ))
generators=()
for i in $(seq 1 "$GATEWAYS"); do
  "$BIN" loadtest storm --target "127.0.0.$((i + 1)):1883" --sources "127.0.1.$i" --prefix "s$i" --protocol 5 \
    --connections "$PER" --persistent --parallel 256 --threads 1 --connect-timeout 55 --hold 5 \
    --storm-at "$storm_at" --server-pid "$router_pid" >"$dir/storm-$i.json" 2>"$dir/storm-$i.log" &
  generators+=($!)
done
failed=0
for pid in "${generators[@]}"; do wait "$pid" || failed=1; done
after=$(last_log)
cat "$dir"/storm-*.log >&2
[ "$failed" = 0 ] || { echo "a generator failed" >&2; exit 1; }
python3 - "$dir" "$GATEWAYS" "$PER" "$before" "$after" <<'PY'
import json, sys
out, gateways, per, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
runs = [json.load(open("%s/storm-%d.json" % (out, i)))["results"] for i in range(1, gateways + 1)]
clients = gateways * per
back = sum(r["back"] for r in runs)
present = sum(r["sessions_present"] for r in runs)
failed = sum(r["failures"] for r in runs)
last = max(r["last_back_seconds"] for r in runs)
entries = after - before
print("storm of %d persistent clients over %d gateways: %d back (%d sessions present, %d failed), "
      "the last after %.2f s; router: %d Raft entries for %d session events (connect, reconnect, leave) "
      "= %.3f per event" % (clients, gateways, back, present, failed, last, entries, 3 * clients,
                            entries / (3.0 * clients)))
PY

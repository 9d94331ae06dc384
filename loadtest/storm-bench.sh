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
PER=$((CLIENTS / GATEWAYS))
dir=$(mktemp -d /tmp/herald-storm-bench.XXXXXX)
# shellcheck source=loadtest/processes.sh
source loadtest/processes.sh
last_log() { "$BIN" ctl cluster status --routers "http://$grpc" | awk 'NR == 2 { print $5 }'; }

echo "max_connections = $((PER + 1000))" >"$dir/gateway.toml"
start_router_and_gateways "$dir" "$GATEWAYS"

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

#!/usr/bin/env bash
# The push API at scale: a broadcast and a tag push to DEVICES connected
# devices, spread over GATEWAYS gateway processes and as many
# `herald loadtest devices` processes (a process may hold 20,000 sockets
# here), with one router or a cluster of ROUTERS (the devices then located
# and counted at their registry shards' owners). Reports, per send, the latency from the HTTP
# request to each device's delivery (p50, p99, max) over every device.
#
# Usage: loadtest/push-bench.sh [DEVICES] [GATEWAYS] [ROUTERS]
# Needs a release build (cargo build --release) or HERALD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${1:-100000}
GATEWAYS=${2:-6}
ROUTERS=${3:-1}
KEY=bench-key-0123456789abcdef
PER=$((DEVICES / GATEWAYS))
dir=$(mktemp -d /tmp/herald-push-bench.XXXXXX)
# shellcheck source=loadtest/processes.sh
source loadtest/processes.sh

cat > "$dir/gateway.toml" <<EOF
max_connections = $((PER + 1000))
[push]
http = "127.0.0.1:0"
rate_per_second = 100000
[push.apps.default]
api_keys = ["$KEY"]
EOF

start_router_and_gateways "$dir" "$GATEWAYS" "$ROUTERS"
http=$(echo "${gateway_lines[0]}" | field http)

generators=()
echo "connecting $DEVICES devices over $GATEWAYS gateways" >&2
started=$(date +%s)
for i in $(seq 1 "$GATEWAYS"); do
  "$BIN" loadtest devices --target "127.0.0.$((i + 1)):1883" --sources "127.0.1.$i" --prefix "g$i" --protocol 5 \
    --devices "$PER" --expect 2 --wait 120 --parallel 512 --connect-timeout 300 --threads 1 \
    --ready-file "$dir/ready-$i" --latencies-file "$dir/latencies-$i" >"$dir/devices-$i.json" 2>"$dir/devices-$i.log" &
  pids+=($!)
  generators+=($!)
done
for i in $(seq 1 "$GATEWAYS"); do
  for _ in $(seq 1 3000); do [ -f "$dir/ready-$i" ] && break; sleep 0.1; done
  [ -f "$dir/ready-$i" ] || { echo "devices $i never got ready" >&2; cat "$dir/devices-$i.log" >&2; exit 1; }
done
echo "all connected and subscribed in $(( $(date +%s) - started )) s" >&2

post() { curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$http$1" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' --data-binary "@$2"; }

# Every device gets the tag `bench`, through the bulk API (1,000 a request).
python3 - "$GATEWAYS" "$PER" "$dir" <<'EOF'
import json, sys
gateways, per, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ids = ["g%d-d%d" % (g, d) for g in range(1, gateways + 1) for d in range(per)]
for n, start in enumerate(range(0, len(ids), 1000)):
    with open("%s/tag-%d.json" % (out, n), "w") as f:
        json.dump({"add": ids[start:start + 1000]}, f)
EOF
for file in "$dir"/tag-*.json; do
  code=$(post /v1/apps/default/tags/bench/devices "$file")
  [ "$code" = 200 ] || { echo "tagging failed: $code" >&2; exit 1; }
done

echo '{"audience":{"all":true},"content":{"notification":{"title":"broadcast"}},"options":{"ttl":600}}' >"$dir/all.json"
echo '{"audience":{"tags":{"and":["bench",{"not":"nobody"}]}},"content":{"data":{"n":2}},"options":{"ttl":600}}' >"$dir/tag.json"
code=$(post /v1/apps/default/messages "$dir/all.json"); [ "$code" = 202 ] || { echo "broadcast: $code" >&2; exit 1; }
sleep 5
code=$(post /v1/apps/default/messages "$dir/tag.json"); [ "$code" = 202 ] || { echo "tag push: $code" >&2; exit 1; }

for pid in "${generators[@]}"; do wait "$pid" || true; done
cat "$dir"/devices-*.log >&2
python3 - "$dir" "$DEVICES" <<'EOF'
import glob, sys
out, devices = sys.argv[1], int(sys.argv[2])
by = {0: [], 1: []}
for name in glob.glob(out + "/latencies-*"):
    for line in open(name):
        ordinal, latency = line.split()
        by.setdefault(int(ordinal), []).append(int(latency) / 1000.0)
for ordinal, label in ((0, "broadcast"), (1, "tag push")):
    values = sorted(by.get(ordinal, []))
    if not values:
        print("%s: no deliveries" % label)
        continue
    q = lambda p: values[min(len(values) - 1, int(p * len(values)))]
    print("%s: %d/%d devices, latency from the HTTP send p50 %.0f ms, p99 %.0f ms, last %.0f ms"
          % (label, len(values), devices, q(0.50), q(0.99), values[-1]))
EOF

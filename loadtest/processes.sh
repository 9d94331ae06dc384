# Sourced by the benchmarks that run one router and several gateways as
# separate processes (push-bench.sh, storm-bench.sh); not run on its own.
# Sets BIN (HERALD_BIN, or the release build) and kills every process
# added to `pids` when the script exits.

BIN=${HERALD_BIN:-${CARGO_TARGET_DIR:-target}/release/herald}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits until FILE has a line matching PATTERN; prints it.
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

# Prints the value of `NAME=value` in the line on standard input.
field() { sed -E "s/.* $1=([^ ]+).*/\1/"; }

# start_router_and_gateways DIR GATEWAYS: one router and GATEWAYS gateways
# (MQTT on 127.0.0.2:1883 and up, configured by DIR/gateway.toml), logs in
# DIR; waits until all listen. Sets grpc, cluster, router_pid and
# gateway_lines (each gateway's "listening" line).
start_router_and_gateways() {
  local dir=$1 gateways=$2 line
  NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" router --grpc 127.0.0.1:0 --data "$dir/router" \
    >"$dir/router.log" 2>&1 &
  router_pid=$!
  pids+=("$router_pid")
  line=$(wait_line "$dir/router.log" "listening")
  grpc=$(echo "$line" | field grpc)
  cluster=$(echo "$line" | field cluster)
  for i in $(seq 1 "$gateways"); do
    NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" gateway --router "http://$grpc" --cluster-id "$cluster" \
      --mqtt "127.0.0.$((i + 1)):1883" --node-id "$i" --config "$dir/gateway.toml" >"$dir/gateway-$i.log" 2>&1 &
    pids+=($!)
  done
  gateway_lines=()
  for i in $(seq 1 "$gateways"); do
    gateway_lines+=("$(wait_line "$dir/gateway-$i.log" "listening")")
  done
}

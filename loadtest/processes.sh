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

# start_router_and_gateways DIR GATEWAYS [ROUTERS]: one router (or a
# cluster of ROUTERS, on 127.0.0.11 and up, port 7401 and up) and GATEWAYS
# gateways (MQTT on 127.0.0.2:1883 and up, configured by DIR/gateway.toml,
# each linked to every router), logs in DIR; waits until all listen. Sets
# grpc (the first router's), cluster, router_pid (the first router's),
# router_pids and gateway_lines (each gateway's "listening" line).
start_router_and_gateways() {
  local dir=$1 gateways=$2 routers=${3:-1} line peers="" addresses="" n
  [[ $routers =~ ^[1-9][0-9]*$ ]] || { echo "ROUTERS must be a number of routers, 1 or more: $routers" >&2; return 1; }
  router_pids=()
  if [ "$routers" = 1 ]; then
    NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" router --grpc 127.0.0.1:0 --data "$dir/router" \
      >"$dir/router.log" 2>&1 &
    router_pids+=($!)
    line=$(wait_line "$dir/router.log" "listening")
    grpc=$(echo "$line" | field grpc)
    cluster=$(echo "$line" | field cluster)
    addresses="http://$grpc"
  else
    cluster=bench
    for n in $(seq 1 "$routers"); do
      peers+="${peers:+,}$n=127.0.0.$((10 + n)):$((7400 + n))"
      addresses+="${addresses:+,}http://127.0.0.$((10 + n)):$((7400 + n))"
    done
    for n in $(seq 1 "$routers"); do
      NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" router --node-id "$n" --grpc "127.0.0.$((10 + n)):$((7400 + n))" \
        --peers "$peers" --cluster-id "$cluster" --data "$dir/router-$n" >"$dir/router-$n.log" 2>&1 &
      router_pids+=($!)
    done
    for n in $(seq 1 "$routers"); do wait_line "$dir/router-$n.log" "listening" >/dev/null; done
    grpc=127.0.0.11:7401
  fi
  router_pid=${router_pids[0]}
  pids+=("${router_pids[@]}")
  for i in $(seq 1 "$gateways"); do
    NO_COLOR=1 RUST_LOG=warn,herald=info "$BIN" gateway --router "$addresses" --cluster-id "$cluster" \
      --mqtt "127.0.0.$((i + 1)):1883" --node-id "$i" --config "$dir/gateway.toml" >"$dir/gateway-$i.log" 2>&1 &
    pids+=($!)
  done
  gateway_lines=()
  for i in $(seq 1 "$gateways"); do
    gateway_lines+=("$(wait_line "$dir/gateway-$i.log" "listening")")
  done
}

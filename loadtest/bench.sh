#!/usr/bin/env bash
# Runs the `herald loadtest` scenarios against Herald standalone and against
# Mosquitto 2.0, side by side in one run on this machine, and writes a
# Markdown table (scenario, broker, key figures, ratio Herald/Mosquitto).
#
#   loadtest/bench.sh [OUT.md]          # default: the table on stdout
#
# Each broker is started fresh for each scenario on 127.0.0.1 with a free
# port, its pid handed to the generator (server CPU and memory), and stopped
# after. Loopback only: it refuses any other address.
#
# Sizes (environment, defaults in brackets):
#   CONN_CONNECTIONS [10000]  CONN_RATE [50000]
#   FANOUT_SUBSCRIBERS [1000] FANOUT_QOS0_RATE [1000] FANOUT_QOS1_RATE [300]
#                             (messages/s of the one publisher: 1M and 300k
#                             deliveries/s, the "must" lines of issue 7)
#   FANIN_PUBLISHERS [1000]   FANIN_RATE [10000]
#   P2P_PAIRS [1000]          P2P_RATE [10000]
#   STORM_CONNECTIONS [5000]
#   PERSIST_SUBSCRIBERS [10]  PERSIST_MESSAGES [10000]
#   SHARED_MEMBERS [100]      SHARED_RATE [10000]
#   BENCH_DURATION [10] s     BENCH_PAYLOAD [64] B    BENCH_THREADS [2] generator threads
#   BENCH_SOURCES [127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5]
#   BENCH_HERALD_BIN: a herald binary to use instead of building one
#   MOSQUITTO: the mosquitto binary [/usr/sbin/mosquitto]
#   BENCH_SCENARIOS [conn fanout-qos0 fanout-qos1 fanin-qos1 p2p-qos1 shared-qos1 storm persist]
#                 (p2p-persistent: p2p with persistent subscribers, on request)
#   BENCH_CLUSTER [0]: 1 adds a column for a local Herald cluster
#                 (deploy/local-cluster.sh: three routers, two gateways; the
#                 generator drives gateway 1, so every message crosses the
#                 gateway→router→gateway gRPC path; server CPU and memory are
#                 gateway 1's and every router's, summed)
#   BENCH_CLUSTER_ROUTERS [3]: routers of that cluster (1 to 3)
#
# Broker settings: both brokers run with their defaults except that
# Mosquitto gets `set_tcp_nodelay true` (Herald always sets TCP_NODELAY), and
# for `persist` both brokers' per-session queues are raised to
# PERSIST_MESSAGES, so that the scenario measures queueing rather than the
# default caps of 1000: Mosquitto's max_queued_messages (offline and behind
# the in-flight window alike), Herald's limits.max_offline_messages.

set -euo pipefail

out=${1:-/dev/stdout}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=127.0.0.1

conn_connections=${CONN_CONNECTIONS:-10000}
conn_rate=${CONN_RATE:-50000}
fanout_subscribers=${FANOUT_SUBSCRIBERS:-1000}
fanout_qos0_rate=${FANOUT_QOS0_RATE:-1000}
fanout_qos1_rate=${FANOUT_QOS1_RATE:-300}
fanin_publishers=${FANIN_PUBLISHERS:-1000}
fanin_rate=${FANIN_RATE:-10000}
p2p_pairs=${P2P_PAIRS:-1000}
p2p_rate=${P2P_RATE:-10000}
storm_connections=${STORM_CONNECTIONS:-5000}
persist_subscribers=${PERSIST_SUBSCRIBERS:-10}
persist_messages=${PERSIST_MESSAGES:-10000}
shared_members=${SHARED_MEMBERS:-100}
shared_rate=${SHARED_RATE:-10000}
duration=${BENCH_DURATION:-10}
payload=${BENCH_PAYLOAD:-64}
threads=${BENCH_THREADS:-2}
sources=${BENCH_SOURCES:-127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5}

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

log() {
    echo "bench.sh: $*" >&2
}

# --- loopback only ----------------------------------------------------------

is_loopback() {
    [[ $1 =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] &&
        ((BASH_REMATCH[1] <= 255 && BASH_REMATCH[2] <= 255 && BASH_REMATCH[3] <= 255))
}

is_loopback "$host" || die "refusing $host: loopback (127.0.0.0/8) only"
IFS=, read -r -a source_list <<<"$sources"
for source in "${source_list[@]}"; do
    is_loopback "$source" || die "refusing source $source: loopback (127.0.0.0/8) only"
done
if command -v ip >/dev/null; then
    ip -o -4 addr show dev lo 2>/dev/null | grep -q ' 127\.0\.0\.1/8 ' ||
        die "no 127.0.0.1/8 on the loopback interface: refusing to run"
fi

# --- tools ------------------------------------------------------------------

mosquitto=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
need_packages=()
[[ -x $mosquitto ]] || need_packages+=(mosquitto)
command -v jq >/dev/null || need_packages+=(jq)
if ((${#need_packages[@]})); then
    log "installing ${need_packages[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >&2
    mosquitto=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
fi
[[ -x $mosquitto ]] || die "no mosquitto binary at $mosquitto"

if [[ -n ${BENCH_HERALD_BIN:-} ]]; then
    herald=$BENCH_HERALD_BIN
else
    log "building herald (release)"
    (cd "$root" && cargo build --release -p herald >&2)
    herald=${CARGO_TARGET_DIR:-$root/target}/release/herald
fi
[[ -x $herald ]] || die "no herald binary at $herald"

work=$(mktemp -d /tmp/herald-bench.XXXXXX)
broker_pid=""

stop_broker() {
    if [[ -n $broker_pid ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=""
    fi
}

cleanup() {
    stop_broker
    rm -rf "$work"
}
trap cleanup EXIT

# --- brokers ----------------------------------------------------------------

# Returns a port nobody listens on, below the ephemeral range.
free_port() {
    local port
    for _ in $(seq 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# start_herald NAME [VAR=VALUE...]: sets broker_pid and broker_port.
start_herald() {
    local name=$1
    shift
    local log_file=$work/$name.herald.log
    env "$@" NO_COLOR=1 RUST_LOG=info "$herald" standalone --mqtt "$host:0" --data "$work/$name.herald-data" \
        >"$log_file" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        broker_port=$(grep -o 'listening mqtt=[0-9.]*:[0-9]*' "$log_file" | head -1 | sed 's/.*://') || true
        [[ -n $broker_port ]] && return
        kill -0 "$broker_pid" 2>/dev/null || die "herald exited at start: $(tail -5 "$log_file")"
        sleep 0.1
    done
    die "herald did not announce its address: $(tail -5 "$log_file")"
}

# start_mosquitto NAME [CONFIG LINE...]: sets broker_pid and broker_port.
start_mosquitto() {
    local name=$1
    shift
    local config=$work/$name.mosquitto.conf log_file=$work/$name.mosquitto.log
    for _ in $(seq 5); do
        broker_port=$(free_port)
        {
            echo "listener $broker_port $host"
            echo "allow_anonymous true"
            echo "set_tcp_nodelay true"
            echo "persistence false"
            for line in "$@"; do echo "$line"; done
        } >"$config"
        "$mosquitto" -c "$config" >"$log_file" 2>&1 &
        broker_pid=$!
        for _ in $(seq 50); do
            if (exec 3<>"/dev/tcp/$host/$broker_port") 2>/dev/null; then
                return
            fi
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.1
        done
        stop_broker
    done
    die "mosquitto would not start: $(tail -5 "$log_file")"
}

# start_cluster NAME [VAR=VALUE...]: three routers and two gateways; sets
# broker_pid (gateway 1), broker_port, cluster_dir and router_pids.
start_cluster() {
    local name=$1
    shift
    cluster_dir=$work/$name.cluster
    env "$@" LOCAL_CLUSTER_BIN="$herald" LOCAL_CLUSTER_ROUTERS="$cluster_routers" \
        "$root/deploy/local-cluster.sh" start "$cluster_dir" >"$cluster_dir.out" 2>&1 ||
        die "the local cluster did not start: $(tail -5 "$cluster_dir.out")"
    broker_port=$(awk '/^gateway-1 mqtt/ {split($3, a, ":"); print a[2]}' "$cluster_dir.out")
    broker_pid=$(awk '/^gateway-1 mqtt/ {print $5}' "$cluster_dir.out")
    # Server CPU and memory: gateway 1 and every router (each owns a share
    # of the registry shards).
    router_pids=$(awk '/^router-/ {print $5}' "$cluster_dir.out" | paste -sd,)
}

stop_cluster() {
    "$root/deploy/local-cluster.sh" stop "$cluster_dir" >/dev/null 2>&1 || true
    sleep 1
    broker_pid=""
}

# --- scenarios --------------------------------------------------------------

common=(--sources "$sources" --threads "$threads")
flow=(--payload "$payload" --duration "$duration" --drain 5)
read -r -a names <<<"${BENCH_SCENARIOS:-conn fanout-qos0 fanout-qos1 fanin-qos1 p2p-qos1 shared-qos1 storm persist}"
cluster=${BENCH_CLUSTER:-0}
cluster_routers=${BENCH_CLUSTER_ROUTERS:-3}
declare -A titles=(
    [conn]="conn $conn_connections"
    [fanout-qos0]="fanout 1→$fanout_subscribers QoS 0, $fanout_qos0_rate msg/s"
    [fanout-qos1]="fanout 1→$fanout_subscribers QoS 1, $fanout_qos1_rate msg/s"
    [fanin-qos1]="fanin $fanin_publishers→1 QoS 1, $fanin_rate msg/s"
    [p2p-qos1]="p2p $p2p_pairs pairs QoS 1, $p2p_rate msg/s"
    [p2p-persistent]="p2p $p2p_pairs pairs QoS 1, persistent subscribers, $p2p_rate msg/s"
    [shared-qos1]="shared 1→group of $shared_members QoS 1, $shared_rate msg/s"
    [storm]="storm $storm_connections persistent"
    [persist]="persist $persist_subscribers subs × $persist_messages msgs QoS 1"
)

arguments() {
    case $1 in
    conn) echo conn --connections "$conn_connections" --rate "$conn_rate" --hold 2 ;;
    fanout-qos0) echo fanout --connections "$fanout_subscribers" --qos 0 --rate "$fanout_qos0_rate" "${flow[@]}" ;;
    fanout-qos1) echo fanout --connections "$fanout_subscribers" --qos 1 --rate "$fanout_qos1_rate" "${flow[@]}" ;;
    fanin-qos1) echo fanin --connections "$fanin_publishers" --qos 1 --rate "$fanin_rate" "${flow[@]}" ;;
    p2p-qos1) echo p2p --connections "$p2p_pairs" --qos 1 --rate "$p2p_rate" "${flow[@]}" ;;
    # Online persistent sessions: Herald keeps each message in the session's
    # inbox until acknowledged (committed before PUBACK); Mosquitto keeps
    # in-flight messages in memory.
    p2p-persistent) echo p2p --connections "$p2p_pairs" --qos 1 --rate "$p2p_rate" --session-expiry 3600 "${flow[@]}" ;;
    # Shared subscriptions are MQTT 5 (Mosquitto serves $share to 3.1.1 clients too).
    shared-qos1) echo shared --connections "$shared_members" --qos 1 --protocol 5 --rate "$shared_rate" "${flow[@]}" ;;
    storm) echo storm --connections "$storm_connections" --persistent --hold 1 ;;
    persist) echo persist --connections "$persist_subscribers" --messages "$persist_messages" --payload "$payload" ;;
    esac
}

# run_one NAME BROKER: starts BROKER, runs scenario NAME, writes NAME.BROKER.json.
run_one() {
    local name=$1 broker=$2 herald_env=() mosquitto_config=()
    if [[ $name == persist ]]; then
        herald_env=("HERALD_LIMITS_MAX_OFFLINE_MESSAGES=$persist_messages")
        mosquitto_config=("max_queued_messages $persist_messages")
    fi
    local target_host=$host pids
    case $broker in
    herald) start_herald "$name" "${herald_env[@]}" ;;
    mosquitto) start_mosquitto "$name" "${mosquitto_config[@]}" ;;
    cluster)
        start_cluster "$name" "${herald_env[@]}"
        target_host=127.0.0.2
        ;;
    esac
    pids=$broker_pid
    [[ $broker == cluster ]] && pids="$broker_pid,$router_pids"
    local args
    read -r -a args <<<"$(arguments "$name")"
    log "$name on $broker (port $broker_port, pid $pids): herald loadtest ${args[*]}"
    local json=$work/$name.$broker.json err=$work/$name.$broker.err
    if timeout $((duration + 240)) "$herald" loadtest "${args[@]}" "${common[@]}" \
        --target "$target_host:$broker_port" --server-pid "$pids" >"$json" 2>"$err"; then
        tail -1 "$err" >&2
    else
        log "$name on $broker failed: $(tail -3 "$err")"
        : >"$json"
    fi
    if [[ $broker == cluster ]]; then
        stop_cluster
    else
        stop_broker
    fi
    sleep 1
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for name in "${names[@]}"; do
    run_one "$name" herald
    ((cluster)) && run_one "$name" cluster
    run_one "$name" mosquitto
done

# --- table ------------------------------------------------------------------

# figures NAME FILE: the key figures of one run, as Markdown cell text.
figures() {
    local name=$1 file=$2
    if [[ ! -s $file ]]; then
        echo "**failed**: $(tail -1 "${file%.json}.err" | tr '|' '/')"
        return
    fi
    case $name in
    conn)
        jq -r '.results | "\(.connected) connected, \(.connects_per_second | floor) connects/s, handshake p50/p99 \(.handshake_us.p50)/\(.handshake_us.p99) µs, \(.server_bytes_per_connection // 0 | floor) B/connection, \(.server_while_connecting.cpu_us_per_connection // 0 | floor) server µs CPU/connect, \(.connects_per_server_cpu_second // 0 | floor) connects per server CPU-second"' "$file"
        ;;
    fanout-* | fanin-* | p2p-* | shared-*)
        jq -r '.results | "\(.deliveries_per_second | floor) deliveries/s (\(.deliveries_received)/\(.deliveries_expected)), losses \(.losses), dups \(.duplicates)+\(.dup_redeliveries) DUP; latency p50/p99/p99.9/max \(.latency_us.p50 // "-")/\(.latency_us.p99 // "-")/\(.latency_us.p999 // "-")/\(.latency_us.max // "-") µs" + (if .ack_latency_us then "; ack p50/p99 \(.ack_latency_us.p50)/\(.ack_latency_us.p99) µs" else "" end) + "; server \(.server.cpu_us_per_delivery // 0 | . * 100 | floor / 100) µs CPU/delivery, RSS \(.server.rss_after // 0 | ./1048576 | floor) MiB; generator CPU \(.generator_cpu_seconds // 0 | . * 100 | round / 100) s"' "$file"
        ;;
    storm)
        jq -r '.results | "\(.back) back in \(.last_back_seconds * 1000 | floor) ms (\(.reconnects_per_second | floor)/s), \(.failures) failed, \(.retries) retries, \(.sessions_present) sessions present; reconnect p50/p99 \(.reconnect_us.p50 // "-")/\(.reconnect_us.p99 // "-") µs; server \(.server.cpu_us_per_reconnect // 0 | floor) µs CPU/reconnect"' "$file"
        ;;
    persist)
        jq -r '.results | "\(.publish_per_second | floor) publishes/s, ack p50/p99 \(.ack_latency_us.p50)/\(.ack_latency_us.p99) µs; back online \(.deliveries_received)/\(.deliveries_expected) in \(.delivery_seconds * 1000 | floor) ms, losses \(.losses), dups \(.duplicates)+\(.dup_redeliveries) DUP, in order: \(.in_order); server \(.server_publish.cpu_us_per_publish // 0 | floor) µs CPU/publish"' "$file"
        ;;
    esac
}

# ratio NAME HERALD_FILE MOSQUITTO_FILE: Herald/Mosquitto for the headline figures.
ratio() {
    local name=$1 herald_file=$2 mosquitto_file=$3
    [[ -s $herald_file && -s $mosquitto_file ]] || {
        echo "—"
        return
    }
    local filter
    case $name in
    conn) filter='[["connects/s", .results.connects_per_second], ["B/connection", .results.server_bytes_per_connection]]' ;;
    fanout-* | fanin-* | p2p-* | shared-*) filter='[["deliveries/s", .results.deliveries_per_second], ["p99", .results.latency_us.p99], ["CPU/delivery", .results.server.cpu_us_per_delivery]]' ;;
    storm) filter='[["time to all back", .results.last_back_seconds]]' ;;
    persist) filter='[["publishes/s", .results.publish_per_second], ["ack p99", .results.ack_latency_us.p99]]' ;;
    esac
    jq -rn --slurpfile h "$herald_file" --slurpfile m "$mosquitto_file" "
        def significant: if . == 0 then 0 else (log10 | floor) as \$e | pow(10; 1 - \$e) as \$m
            | (. * \$m | round) / \$m end;
        [(\$h[0] | $filter), (\$m[0] | $filter)] | transpose
        | map(.[0][0] as \$name | .[0][1] as \$a | .[1][1] as \$b
              | if (\$a == null or \$b == null or \$b == 0) then \"\(\$name) —\"
                else \"\(\$name) ×\(\$a / \$b | significant)\" end)
        | join(\", \")"
}

{
    echo "## herald loadtest: Herald standalone vs Mosquitto"
    echo
    echo "- started $started; $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)"
    echo "- herald $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown) (release); $( ("$mosquitto" -h 2>&1 || true) | head -1)"
    echo "- generator: $threads thread(s), payload $payload B, ${duration} s per flow scenario, sources $sources; broker and generator share the machine"
    echo "- brokers at their defaults, except Mosquitto's set_tcp_nodelay true; for persist the per-session queues of both raised to $persist_messages"
    echo
    echo "| scenario | broker | key figures | Herald/Mosquitto |"
    echo "|---|---|---|---|"
    for name in "${names[@]}"; do
        h=$work/$name.herald.json
        m=$work/$name.mosquitto.json
        echo "| ${titles[$name]} | Herald | $(figures "$name" "$h") | $(ratio "$name" "$h" "$m") |"
        if ((cluster)); then
            c=$work/$name.cluster.json
            echo "| ${titles[$name]} | Herald cluster ($cluster_routers routers, 2 gateways) | $(figures "$name" "$c") | $(ratio "$name" "$c" "$m"); cluster/standalone: $(ratio "$name" "$c" "$h") |"
        fi
        echo "| ${titles[$name]} | Mosquitto | $(figures "$name" "$m") | |"
    done
    echo
    echo "Ratios above 1 mean Herald's figure is larger (better for rates, worse for latency, CPU, memory and time)."
} >"$out"
log "done; $( [[ $out == /dev/stdout ]] && echo "table above" || echo "table in $out")"

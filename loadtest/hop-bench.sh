#!/usr/bin/env bash
# p2p (QoS 1, one topic per pair) at a series of rates through Herald
# standalone and through a local cluster (deploy/local-cluster.sh: three
# routers, two gateways; the generator drives gateway 1), to find the
# highest rate each keeps the machine at most 70% busy, the latency there,
# and the time a publish spends on the gateway → router → gateway hop.
#
#   loadtest/hop-bench.sh [RATE...]     # default: 10000 20000 30000 40000 60000 80000
#
# Per run: messages/s delivered, losses, how busy the machine was (all
# cores, from /proc/stat over the middle of the run: every process counts,
# the generator's too), end-to-end and publish→PUBACK latency from the
# generator, and for the cluster the hop as gateway 1 measures it
# (herald_router_publish_round_trip_seconds: from a publish taken for the
# router link to the router's reply; p50/p99 interpolated within its
# buckets as Prometheus' histogram_quantile does).
#
# Environment: HOP_PAIRS [1000], HOP_DURATION [10] s, HOP_MODES
# [standalone cluster], HOP_BUSY [70] (%), BENCH_HERALD_BIN (a herald
# binary instead of a release build), BENCH_SOURCES
# [127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7]. Loopback only.

set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a rates <<<"${*:-10000 20000 30000 40000 60000 80000}"
read -r -a modes <<<"${HOP_MODES:-standalone cluster}"
pairs=${HOP_PAIRS:-1000}
duration=${HOP_DURATION:-10}
busy_limit=${HOP_BUSY:-70}
sources=${BENCH_SOURCES:-127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7}

die() {
    echo "hop-bench: $*" >&2
    exit 1
}
command -v jq >/dev/null || die "needs jq"
herald=${BENCH_HERALD_BIN:-}
if [[ -z $herald ]]; then
    (cd "$root" && cargo build --release -p herald --bin herald >&2) || die "build failed"
    herald=${CARGO_TARGET_DIR:-$root/target}/release/herald
fi
work=$(mktemp -d /tmp/herald-hop-bench.XXXXXX)
trap 'pkill -TERM -P $$ 2>/dev/null || true; "$root/deploy/local-cluster.sh" stop "$work/cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# busy_jiffies: "busy total" over all cores since boot.
busy_jiffies() {
    awk '/^cpu / {idle = $5 + $6; total = 0; for (i = 2; i <= NF; i++) total += $i; print total - idle, total}' /proc/stat
}

# round_trips URL: the hop histogram's cumulative buckets, "le count" lines.
round_trips() {
    curl -s --max-time 5 "$1/metrics" |
        sed -n 's/^herald_router_publish_round_trip_seconds_bucket{le="\([^"]*\)"} \([0-9]*\)$/\1 \2/p'
}

# quantile Q BEFORE AFTER: Q of the bucket counts added between two scrapes.
quantile() {
    paste -d ' ' "$2" "$3" | awk -v q="$1" '
        { le[NR] = $1; n[NR] = $4 - $2 } END {
            total = n[NR]; if (total == 0) { print "-"; exit }
            rank = q * total; lower = 0; below = 0
            for (i = 1; i <= NR; i++) {
                if (n[i] >= rank) {
                    if (le[i] == "+Inf") { printf ">%g ms\n", lower * 1000; exit }
                    printf "%.2f ms\n", (lower + (le[i] - lower) * (rank - below) / (n[i] - below)) * 1000; exit
                }
                lower = le[i]; below = n[i]
            }
        }'
}

printf '| mode | offered msg/s | delivered msg/s | losses | machine busy | latency p50 / p99 | PUBACK p50 / p99 | gateway→router→gateway p50 / p99 |\n'
printf '|---|---|---|---|---|---|---|---|\n'
declare -A best
for mode in "${modes[@]}"; do
    for rate in "${rates[@]}"; do
        ops=""
        if [[ $mode == cluster ]]; then
            LOCAL_CLUSTER_BIN="$herald" "$root/deploy/local-cluster.sh" start "$work/cluster" >"$work/cluster.out" 2>&1 ||
                die "the local cluster did not start: $(tail -3 "$work/cluster.out")"
            target=$(awk '/^gateway-1 mqtt/ {print $3}' "$work/cluster.out")
            ops=http://$(grep -o 'ops=[0-9.:]*' "$work/cluster/gateway-1.log" | head -1 | cut -d= -f2)
        else
            NO_COLOR=1 "$herald" standalone --mqtt 127.0.0.1:0 --data "$work/data" >"$work/standalone.log" 2>&1 &
            pid=$!
            target=""
            for _ in $(seq 100); do
                target=$(grep -o 'listening mqtt=[0-9.]*:[0-9]*' "$work/standalone.log" | head -1 | cut -d= -f2) || true
                [[ -n $target ]] && break
                sleep 0.1
            done
            [[ -n $target ]] || die "herald standalone did not start: $(tail -3 "$work/standalone.log")"
        fi
        [[ -n $ops ]] && round_trips "$ops" >"$work/before"
        timeout $((duration + 120)) "$herald" loadtest p2p --connections "$pairs" --qos 1 --rate "$rate" \
            --payload 64 --duration "$duration" --drain 5 --sources "$sources" --threads 2 \
            --target "$target" >"$work/run.json" 2>"$work/run.err" &
        load=$!
        # The middle of the run: past the connects, before the drain.
        sleep $((duration / 2 - 1))
        read -r busy0 total0 < <(busy_jiffies)
        sleep 3
        read -r busy1 total1 < <(busy_jiffies)
        wait "$load" || die "loadtest failed: $(tail -3 "$work/run.err")"
        hop="-"
        if [[ -n $ops ]]; then
            round_trips "$ops" >"$work/after"
            hop="$(quantile 0.5 "$work/before" "$work/after") / $(quantile 0.99 "$work/before" "$work/after")"
            "$root/deploy/local-cluster.sh" stop "$work/cluster" >/dev/null 2>&1
        else
            kill "$pid"
            wait "$pid" 2>/dev/null || true
            rm -rf "$work/data"
        fi
        busy=$(((busy1 - busy0) * 100 / (total1 - total0)))
        jq -r --arg mode "$mode" --arg rate "$rate" --arg busy "$busy%" --arg hop "$hop" '.results |
            "| \($mode) | \($rate) | \(.deliveries_per_second | floor) | \(.losses) | \($busy) | " +
            "\(.latency_us.p50 / 1000) / \(.latency_us.p99 / 1000) ms | " +
            "\(.ack_latency_us.p50 / 1000) / \(.ack_latency_us.p99 / 1000) ms | \($hop) |"' "$work/run.json"
        delivered=$(jq '.results.deliveries_per_second | floor' "$work/run.json")
        if ((busy <= busy_limit && delivered > ${best[$mode]:-0})); then
            best[$mode]=$delivered
        fi
        sleep 1
    done
done
echo
for mode in "${modes[@]}"; do
    echo "highest rate at most ${busy_limit}% busy, $mode: ${best[$mode]:-none} msg/s"
done
if [[ -n ${best[standalone]:-} && -n ${best[cluster]:-} ]]; then
    awk -v c="${best[cluster]}" -v s="${best[standalone]}" 'BEGIN { printf "cluster/standalone: %.2f\n", c / s }'
fi

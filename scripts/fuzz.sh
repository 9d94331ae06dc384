#!/usr/bin/env bash
# Runs Herald's cargo-fuzz targets (docs/fuzzing.md): each for SECONDS
# (default 600), under a memory limit so an oversized allocation is a
# failure, then minimises its corpus in place. Needs a nightly toolchain
# and cargo-fuzz (installed when missing).
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]    targets: decode session tag_expr push_json
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode session tag_expr push_json)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
# Instrumented builds stay in each fuzz crate's own target directory: they
# would only evict the ordinary builds from a shared one.
unset CARGO_TARGET_DIR
# The crate each target lives in.
dir_of() {
  case "$1" in
    decode) echo gateway/codec ;;
    session|tag_expr|push_json) echo gateway ;;
    *) echo "unknown target: $1" >&2; exit 2 ;;
  esac
}
for target in "${targets[@]}"; do
  dir="$(dir_of "$target")"
  echo "== $target: ${seconds}s in $dir/fuzz"
  # -rss_limit_mb: the whole process; -malloc_limit_mb: any one allocation.
  (cd "$dir" && cargo +nightly fuzz run "$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1)
  (cd "$dir" && cargo +nightly fuzz cmin "$target")
done

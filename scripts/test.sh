#!/usr/bin/env bash
# Runs every check and test Herald has, installing what the tests need.
# This is the README's test command, and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the end-to-end tests drive: Debian's MQTT clients, paho-mqtt,
# the Prometheus client's parser, headless Chromium, curl, redis-server,
# openssl and promtool.
need=()
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
/usr/bin/python3 -c 'import paho.mqtt' >/dev/null 2>&1 || need+=(python3-paho-mqtt)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
# Headless Chromium runs the EventSource page of the SSE tests.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
# A real redis-server backs the tests of device passwords and of the session
# registry kept in Redis.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# openssl makes and signs with the keys of RS256/ES256 device tokens.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# promtool (Debian's prometheus, without its recommends) checks the metrics
# exposition and the alert rules in deploy/prometheus/.
lean=()
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
if [ ${#need[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  echo "installing: ${need[*]} ${lean[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  fi
fi
# The OpenAPI document is checked with openapi-spec-validator (not packaged
# by Debian): installed with pip for the python3 on PATH when missing.
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
  echo "installing: openapi-spec-validator"
  python3 -m pip install --quiet openapi-spec-validator
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# One target directory shared between runs keeps rebuilds incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== format";       cargo fmt --all -- --check
echo "== dependencies"; scripts/check-deps.sh
echo "== lint";         cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests";    cargo test --workspace --doc --locked --quiet
echo "== deployment";   scripts/check-deploy.sh
echo "== tests";        cargo nextest run --workspace --locked --no-fail-fast

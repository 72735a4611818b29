#!/usr/bin/env bash
# Checks deploy/ offline, on a fresh Debian machine as on a developer's: installs what it needs
# (Debian's prometheus package for promtool; kubernetes-validate from PyPI in a venv of its
# own), then
#   - renders each kustomize overlay with `kubectl kustomize` when kubectl is on the machine,
#     and validates every object against the Kubernetes schemas (kubernetes-validate --strict);
#     without kubectl, validates each resource file of base/ and the overlays one by one;
#   - checks the kustomizations' references, secrets, variable and metric names, runbooks and
#     the Dockerfile (scripts/check_deploy.py);
#   - `promtool check rules` and `promtool test rules` on deploy/prometheus, and promtool's
#     parse of every dashboard query;
#   - `systemd-analyze verify` of the units.
# Exits non-zero on any failure; safe to run again (nothing is left behind but the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
started=$(date +%s)
log() { printf '\n== %s\n' "$*"; }

K8S_VERSION="${K8S_VERSION:-1.30.0}"   # the oldest Kubernetes the manifests are meant for
VENV="${IYSGATE_DEPLOY_VENV:-/var/tmp/iysgate-deploy-venv}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

log "tools"
command -v promtool >/dev/null 2>&1 || apt_install prometheus
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
py="$VENV/bin/python"
promtool --version 2>&1 | head -1
systemd-analyze --version | head -1
"$VENV/bin/kubernetes-validate" --version
if command -v kubectl >/dev/null 2>&1; then
  kubectl version --client 2>/dev/null | grep -i kustomize || true
else
  echo "kubectl not found: the overlays are not rendered; resource files are validated one by one"
fi

log "kubernetes manifests"
rendered=()
if command -v kubectl >/dev/null 2>&1; then
  for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    name=$(basename "$dir")
    kubectl kustomize "$dir" > "$work/$name.yaml"
    echo "rendered $dir: $(grep -c '^kind:' "$work/$name.yaml") objects"
    rendered+=("$work/$name.yaml")
  done
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${rendered[@]}"
  echo "kubernetes-validate --strict (Kubernetes $K8S_VERSION): every rendered object passed"
else
  # Resources only: patches are partial objects and would fail a schema by design.
  files=()
  for k in deploy/k8s/base/kustomization.yaml deploy/k8s/overlays/*/kustomization.yaml; do
    dir=$(dirname "$k")
    while read -r res; do
      [ -f "$dir/$res" ] && files+=("$dir/$res")
    done < <("$py" -c 'import sys,yaml; [print(r) for r in yaml.safe_load(open(sys.argv[1])).get("resources",[])]' "$k")
  done
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${files[@]}"
  echo "kubernetes-validate --strict (Kubernetes $K8S_VERSION): ${#files[@]} resource files passed"
  rendered=("${files[@]}")
fi

log "deploy/ consistency"
"$py" scripts/check_deploy.py "$root" "$work/dashboard-rules.yml" "${rendered[@]}"

log "prometheus rules"
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/tests.yml
echo "dashboard queries:"
promtool check rules "$work/dashboard-rules.yml"

log "systemd units"
# verify wants ExecStart's binary to exist: each unit is verified as written, with only that
# path pointed at a stub. verify exits 0 on ignored lines, so any output is a failure.
printf '#!/bin/sh\n' > "$work/iysgate" && chmod +x "$work/iysgate"
for unit in deploy/systemd/*.service; do
  sed "s#^ExecStart=/usr/local/bin/iysgate#ExecStart=$work/iysgate#" "$unit" > "$work/$(basename "$unit")"
  out=$(systemd-analyze verify "$work/$(basename "$unit")" 2>&1) || { echo "$out"; echo "FAIL $unit"; exit 1; }
  if [ -n "$out" ]; then echo "$out"; echo "FAIL $unit"; exit 1; fi
  echo "ok    $unit ($(systemd-analyze security --offline=yes "$work/$(basename "$unit")" 2>/dev/null | tail -1 | sed 's/^→ //'))"
done

echo
echo "deploy checks passed in $(( $(date +%s) - started )) s"

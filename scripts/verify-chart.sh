#!/usr/bin/env bash
# Chart verification pipeline; needs no cluster and no network beyond the package registries.
#
#   bash scripts/verify-chart.sh            # everything, including the Rust chart tests
#   bash scripts/verify-chart.sh --no-cargo # skip `cargo test --test chart` and `cargo test --test faults chart_pods cluster_pods`
#                                           # (for callers whose `cargo test` runs them anyway);
#                                           # the Helm 3 run of the chart tests still happens
#   bash scripts/verify-chart.sh --images   # also run the Dockerfiles' release builds (slow)
#
# Steps (each failure is reported; the script exits non-zero if any step failed):
#   1. tools: Helm 4 + Helm 3.18 and linters into .tools/ (scripts/chart-tools.sh)
#   2. `ct lint` equivalent: yamale on Chart.yaml with chart-testing's schema, yamllint with
#      chart-testing's lint config, `helm lint --strict` of every ci/*-values.yaml and
#      values/*.yaml with both Helm versions
#   3. `helm template` of every values file (both Helm versions; NOTES.txt through a
#      client-side `helm install --dry-run` with Helm 4), validated by
#      kubernetes-validate --strict against Kubernetes 1.29 (oldest supported) and the newest
#      version it knows; every apiVersion must be on the allow-list and none removed
#   4. values.schema.json is what values.schema.py makes; the README parameter table is what
#      readme-generator makes from values.yaml
#   5. shellcheck of the Redis pod scripts and of this pipeline; hadolint of the Dockerfiles;
#      each Dockerfile's cargo build command is the canonical one and its binary compiles
#      (cargo check) from only what the Dockerfile copies (--images: the release build too)
#   6. Rust chart tests, contract test and the sentinel and cluster scripts simulations (cargo)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
run_cargo=1
build_images=0
for arg in "$@"; do
  case "$arg" in
    --no-cargo) run_cargo=0 ;;
    --images) build_images=1 ;;
    *) echo "usage: $0 [--no-cargo] [--images]" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
failures=()
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures+=("$*"); }

step "1. tools"
bash scripts/chart-tools.sh || { echo "tool installation failed"; exit 1; }
T="$root/.tools"
HELMS=("$T/bin/helm" "$T/bin/helm3")
chart=helm/kvq
KUBE_OLDEST=1.29.0
KUBE_NEWEST=$("$T/venv/bin/python" - <<'EOF'
import os, re, kubernetes_validate
d = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
vs = [tuple(map(int, re.match(r"v(\d+)\.(\d+)\.(\d+)-local-strict$", n).groups())) for n in os.listdir(d) if n.endswith("-local-strict")]
print("%d.%d.%d" % max(vs))
EOF
)
mapfile -t value_files < <(ls "$chart"/ci/*-values.yaml values/*.yaml)
# Every render here is without a cluster: the chart refuses to generate passwords it cannot
# look up unless told this render is a one-off.
NO_CLUSTER=(--set redis.auth.generateWithoutCluster=true --set auth.generateWithoutCluster=true)
echo "values files: ${value_files[*]}"
echo "Kubernetes versions: $KUBE_OLDEST, $KUBE_NEWEST"

step "2. ct lint equivalent"
"$T/venv/bin/yamale" --schema .github/ct/chart_schema.yaml "$chart/Chart.yaml" || fail "yamale Chart.yaml"
"$T/venv/bin/yamllint" --strict --config-file .github/ct/lintconf.yaml \
  "$chart/Chart.yaml" "$chart/values.yaml" "${value_files[@]}" ct.yaml .github/workflows/*.yaml \
  || fail "yamllint"
for h in "${HELMS[@]}"; do
  v=$("$h" version --short)
  out=$("$h" lint --strict "$chart" "${NO_CLUSTER[@]}" 2>&1) || { echo "$out"; fail "helm lint (defaults) with $v"; }
  for f in "${value_files[@]}"; do
    out=$("$h" lint --strict "$chart" -f "$f" "${NO_CLUSTER[@]}" 2>&1) || { echo "$out"; fail "helm lint $f with $v"; }
  done
  echo "helm lint --strict: ${#value_files[@]} values files + defaults with $v"
done

step "3. helm template + kubernetes-validate ($KUBE_OLDEST, $KUBE_NEWEST) + API versions"
render_dir=$(mktemp -d)
trap 'rm -rf "$render_dir"' EXIT
for h in "${HELMS[@]}"; do
  hv=$(basename "$h")
  for f in "${value_files[@]}"; do
    out="$render_dir/$hv-$(echo "$f" | tr '/' '_')"
    if ! "$h" template kvq "$chart" -n kvq -f "$f" "${NO_CLUSTER[@]}" > "$out" 2> "$out.err"; then
      cat "$out.err"; fail "helm template $f with $hv"; continue
    fi
  done
done
# NOTES.txt is rendered only by install: a client-side dry run of every values file (Helm 4;
# Helm 3's install needs a cluster even with --dry-run=client).
for f in "${value_files[@]}"; do
  if ! KUBECONFIG=/dev/null "$T/bin/helm" install kvq "$chart" -n kvq -f "$f" "${NO_CLUSTER[@]}" --dry-run=client > "$render_dir/notes.out" 2>&1 \
    || ! grep -q '^NOTES:' "$render_dir/notes.out"; then
    cat "$render_dir/notes.out"; fail "helm install --dry-run=client $f"
  fi
done
echo "NOTES.txt renders for every values file (Helm 4)"
for k in "$KUBE_OLDEST" "$KUBE_NEWEST"; do
  for out in "$render_dir"/*.yaml; do
    res=$("$T/venv/bin/kubernetes-validate" --strict --quiet -k "$k" "$out" 2>&1)
    rc=$?
    # Only the CRD kinds of KEDA and the Prometheus Operator may lack a schema.
    unknown=$(echo "$res" | grep "Couldn't find schema" | grep -vE "kind (ScaledObject|TriggerAuthentication) with api version keda.sh/v1alpha1|kind ServiceMonitor with api version monitoring.coreos.com/v1" || true)
    if [ $rc -ne 0 ] || [ -n "$unknown" ]; then
      echo "$res" | grep -v '^INFO'
      fail "kubernetes-validate $k $(basename "$out")"
    fi
  done
  echo "kubernetes-validate --strict -k $k: $(find "$render_dir" -name "*.yaml" | wc -l) renders"
done
"$T/venv/bin/python" - "$render_dir"/*.yaml <<'EOF' || fail "API versions"
import sys, yaml
# Every apiVersion/kind the chart may render; anything else (e.g. a removed beta API) fails.
allowed = {
    ("v1", k) for k in ("ConfigMap", "Secret", "Service", "ServiceAccount", "Pod")
} | {
    ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "NetworkPolicy"),
    ("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
# API versions removed from Kubernetes (deprecated API migration guide).
removed = {
    "extensions/v1beta1", "apps/v1beta1", "apps/v1beta2", "policy/v1beta1",
    "autoscaling/v2beta1", "autoscaling/v2beta2", "batch/v1beta1", "networking.k8s.io/v1beta1",
    "rbac.authorization.k8s.io/v1beta1", "storage.k8s.io/v1beta1", "scheduling.k8s.io/v1beta1",
    "admissionregistration.k8s.io/v1beta1", "apiextensions.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta1", "flowcontrol.apiserver.k8s.io/v1beta2",
    "flowcontrol.apiserver.k8s.io/v1beta3", "discovery.k8s.io/v1beta1", "node.k8s.io/v1beta1",
    "coordination.k8s.io/v1beta1", "certificates.k8s.io/v1beta1", "events.k8s.io/v1beta1",
}
bad = 0
seen = set()
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        seen.add(key)
        if key[0] in removed:
            print(f"{path}: removed API {key}"); bad += 1
        elif key not in allowed:
            print(f"{path}: API not on the allow-list {key}"); bad += 1
print("API versions rendered:", ", ".join(sorted(f"{a} {k}" for a, k in seen)))
sys.exit(1 if bad else 0)
EOF

step "4. values.schema.json and README parameter table up to date"
"$T/venv/bin/python" "$chart/values.schema.py" | diff -u "$chart/values.schema.json" - \
  || fail "$chart/values.schema.json is out of date: python3 $chart/values.schema.py > $chart/values.schema.json"
readme_tmp="$render_dir/README.md"
cp "$chart/README.md" "$readme_tmp"
if "$T/node_modules/.bin/readme-generator" -v "$chart/values.yaml" -r "$readme_tmp" > "$render_dir/readme.log" 2>&1; then
  if diff -u "$chart/README.md" "$readme_tmp"; then
    echo "README parameter table is up to date"
  else
    fail "helm/kvq/README.md parameter table is out of date: run $T/node_modules/.bin/readme-generator -v $chart/values.yaml -r $chart/README.md"
  fi
else
  cat "$render_dir/readme.log"; fail "readme-generator (values.yaml metadata)"
fi

step "5. shellcheck, hadolint"
"$T/venv/bin/shellcheck" -x -P "$chart/files" -s sh "$chart"/files/*.sh || fail "shellcheck pod scripts"
for f in "$chart"/files/*.sh; do sh -n "$f" || fail "sh -n $f"; done
"$T/venv/bin/shellcheck" scripts/verify-chart.sh scripts/chart-tools.sh || fail "shellcheck pipeline scripts"
"$T/venv/bin/hadolint" Dockerfile.server Dockerfile.worker || fail "hadolint"
echo "shellcheck + hadolint done"
# No Docker engine here. For each Dockerfile: it builds exactly the binary it ships with the
# command CI uses, and that binary compiles (cargo check, --locked) from nothing but what the
# Dockerfile COPYs into its build context; with --images the release build itself runs there.
for c in server worker; do
  df="Dockerfile.$c"
  want="cargo build --release --locked --no-default-features --features $c --bin kvq-$c"
  got=$(grep -v '^#' "$df" | grep -o "cargo build [^&\\]*" | sed 's/ *$//' | sort -u)
  if [ "$got" != "$want" ]; then
    fail "$df builds '$got', expected '$want'"
    continue
  fi
  ctx="$render_dir/context-$c"
  mkdir -p "$ctx"
  grep -E '^COPY [A-Za-z]' "$df" | awk '{ for (i = 2; i < NF; i++) print $i }' \
    | while read -r path; do cp -r "$path" "$ctx/"; done
  check=${want/cargo build --release/cargo check}
  (cd "$ctx" && CARGO_TARGET_DIR="$root/target" $check) || fail "$df: '$check' in its build context"
  if [ "$build_images" = 1 ]; then
    (cd "$ctx" && CARGO_TARGET_DIR="$root/target" $want) || fail "$df: '$want' in its build context"
  fi
done
echo "Dockerfile build commands and contexts checked"

step "6. Rust chart tests, contract test, sentinel and cluster scripts simulations"
if [ "$run_cargo" = 1 ]; then
  export HELM="$T/bin/helm"
  cargo test --locked --test chart || fail "cargo test --test chart"
  cargo test --locked --test faults chart_pods || fail "cargo test --test faults chart_pods"
  cargo test --locked --test faults cluster_pods || fail "cargo test --test faults cluster_pods"
else
  echo "skipped (--no-cargo): cargo test --test chart; cargo test --test faults chart_pods cluster_pods"
fi
# The chart tests again with Helm 3: same objects, same snapshots.
HELM="$T/bin/helm3" cargo test --locked --test chart || fail "cargo test --test chart with Helm 3"

printf '\n==> verify-chart: %ss, %d failure(s)\n' "$(( $(date +%s) - start ))" "${#failures[@]}"
for f in "${failures[@]}"; do echo "  - $f"; done
[ ${#failures[@]} -eq 0 ]

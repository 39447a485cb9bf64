#!/usr/bin/env bash
# Packages the chart for a release with every image pinned by digest, so an install pulls
# exactly the images the release workflow built and signed (and the third-party images it
# resolved at release time).
#
#   scripts/stamp-release.sh --version 1.2.3 --owner acme --out dist \
#       --digest server.image=sha256:<64 hex> --digest worker.image=sha256:<64 hex> \
#       --digest redis.image=sha256:... --digest redis.exporter.image=sha256:... --digest tests.image=sha256:...
#   scripts/stamp-release.sh --list-third-party   # "<values path> <image:tag>" to resolve
#
# On a copy of helm/kvq (--chart to choose another) it sets Chart.yaml's version and appVersion,
# points server/worker at ghcr.io/<owner>/kvq-{server,worker} with the version as tag and the
# digest, sets the digest of every other image in values.yaml, rewrites the
# artifacthub.io/images annotation to the pinned references, then runs `helm package` into --out.
# Every image block of values.yaml must get a digest. The packaged chart is then rendered with
# the defaults and every ci/ scenario (exporter and helm test on): each `image:` must be
# `<repository>@sha256:<64 hex>`, and server/worker exactly the given ones; otherwise it fails.
# Needs helm ($HELM or helm on PATH) and python3 (standard library only).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/helm/kvq"
helm_bin=${HELM:-helm}
version="" owner="" out="" list=0
digests=()
usage() { sed -n '2,10p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=${2:?}; shift 2 ;;
    --owner) owner=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --chart) chart=$(cd "${2:?}" && pwd); shift 2 ;;
    --digest) digests+=("${2:?}"); shift 2 ;;
    --list-third-party) list=1; shift ;;
    *) usage ;;
  esac
done

# The values.yaml editor: image blocks are the mappings holding registry, repository, tag and
# digest. Line-based so that comments (the `helm show values` documentation) survive.
edit() {
  python3 - "$@" <<'PY'
import json, re, sys

mode, chart = sys.argv[1], sys.argv[2]
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")

def image_blocks(lines):
    """{path: {field: line index}} for every mapping with registry/repository/tag/digest."""
    stack, blocks = [], {}
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if key in ("registry", "repository", "tag", "digest") and stack:
            path = ".".join(k for _, k in stack)
            blocks.setdefault(path, {})[key] = i
        stack.append((indent, key))
    return {p: f for p, f in blocks.items() if set(f) == {"registry", "repository", "tag", "digest"}}

def value(line):
    v = line.split(":", 1)[1].strip()
    return v.strip('"')

def setv(lines, i, v):
    m = KEY.match(lines[i])
    lines[i] = f'{m.group(1)}{m.group(2)}: "{v}"' if v else f'{m.group(1)}{m.group(2)}: ""'

values_path = f"{chart}/values.yaml"
lines = open(values_path).read().split("\n")
blocks = image_blocks(lines)
ours = {"server.image": "kvq-server", "worker.image": "kvq-worker"}
missing = set(ours) - set(blocks)
if missing:
    sys.exit(f"values.yaml has no image block at {sorted(missing)}")

if mode == "list":
    for path, f in sorted(blocks.items()):
        if path in ours:
            continue
        reg, repo, tag = (value(lines[f[k]]) for k in ("registry", "repository", "tag"))
        print(path, f"{reg}/{repo}:{tag}" if reg else f"{repo}:{tag}")
    sys.exit(0)

version, owner, given = sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
unknown = set(given) - set(blocks)
if unknown:
    sys.exit(f"--digest for {sorted(unknown)}: no such image in values.yaml (images: {sorted(blocks)})")
unpinned = set(blocks) - set(given)
if unpinned:
    sys.exit(f"no --digest for {sorted(unpinned)}: every image of the released chart is pinned")
images = []
for path, f in sorted(blocks.items()):
    if path in ours:
        setv(lines, f["registry"], "ghcr.io")
        setv(lines, f["repository"], f"{owner}/{ours[path]}")
        setv(lines, f["tag"], version)
    setv(lines, f["digest"], given[path])
    reg, repo, tag = (value(lines[f[k]]) for k in ("registry", "repository", "tag"))
    name = ours.get(path) or repo.rsplit("/", 1)[-1].replace("_", "-")
    images.append((name, f"{reg + '/' if reg else ''}{repo}:{tag}@{given[path]}"))
open(values_path, "w").write("\n".join(lines))

# Chart.yaml: version, appVersion and the artifacthub.io/images annotation (a literal block).
chart_path = f"{chart}/Chart.yaml"
out, skip = [], False
for line in open(chart_path).read().split("\n"):
    if skip:
        if line.startswith("    ") or not line.strip():
            continue
        skip = False
    if line.startswith("version:"):
        line = f"version: {version}"
    elif line.startswith("appVersion:"):
        line = f'appVersion: "{version}"'
    elif line.strip().startswith("artifacthub.io/images:"):
        out.append("  artifacthub.io/images: |")
        for name, ref in images:
            out += [f"    - name: {name}", f"      image: {ref}"]
        skip = True
        continue
    out.append(line)
open(chart_path, "w").write("\n".join(out))
PY
}

if [ "$list" = 1 ]; then
  edit list "$chart"
  exit 0
fi

[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "--version MAJOR.MINOR.PATCH[-PRE] required, got '$version'" >&2; exit 2; }
[[ "$owner" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] || { echo "--owner: a lowercase GitHub owner required, got '$owner'" >&2; exit 2; }
[ -n "$out" ] || { echo "--out DIR required" >&2; exit 2; }
given="{"
for d in "${digests[@]}"; do
  [[ "$d" =~ ^([a-z.]+)=(sha256:[0-9a-f]{64})$ ]] || { echo "--digest PATH=sha256:<64 hex>, got '$d'" >&2; exit 2; }
  given+="\"${BASH_REMATCH[1]}\": \"${BASH_REMATCH[2]}\","
done
given="${given%,}}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$chart" "$work/kvq"
edit stamp "$work/kvq" "$version" "$owner" "$given"
mkdir -p "$out"
"$helm_bin" package "$work/kvq" --destination "$out" >/dev/null
archive="$out/kvq-$version.tgz"
[ -f "$archive" ] || { echo "helm package did not write $archive" >&2; exit 1; }

# The packaged chart as an install renders it: every image pinned, ours the given digests.
server_want="ghcr.io/$owner/kvq-server@$(echo "$given" | sed -n 's/.*"server.image": "\([^"]*\)".*/\1/p')"
worker_want="ghcr.io/$owner/kvq-worker@$(echo "$given" | sed -n 's/.*"worker.image": "\([^"]*\)".*/\1/p')"
scenarios=("")
for f in "$chart"/ci/*-values.yaml; do [ -f "$f" ] && scenarios+=("$f"); done
for s in "${scenarios[@]}"; do
  args=(template kvq "$archive" --set redis.auth.generateWithoutCluster=true --set auth.generateWithoutCluster=true --set redis.exporter.enabled=true --set tests.enabled=true)
  [ -z "$s" ] || args+=(-f "$s")
  rendered=$("$helm_bin" "${args[@]}") || { echo "helm template of $archive ${s:-(defaults)} failed" >&2; exit 1; }
  refs=$(echo "$rendered" | sed -n 's/^ *image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' | sort -u)
  [ -n "$refs" ] || { echo "no image in the render of ${s:-(defaults)}" >&2; exit 1; }
  while read -r ref; do
    [[ "$ref" =~ ^[a-z0-9./_-]+@sha256:[0-9a-f]{64}$ ]] || { echo "${s:-(defaults)}: image not pinned by digest: $ref" >&2; exit 1; }
  done <<< "$refs"
  for want in "$server_want" "$worker_want"; do
    grep -qxF "$want" <<< "$refs" || { echo "${s:-(defaults)}: $want not rendered (images: $refs)" >&2; exit 1; }
  done
done
echo "$archive"

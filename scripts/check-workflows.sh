#!/usr/bin/env bash
# Checks the GitHub workflows without GitHub: every file against the workflow JSON schema
# (check-jsonschema's vendored copy of SchemaStore's), the Renovate configuration against its
# schema, and zizmor's offline audits (template injection, excessive permissions, persisted
# credentials, unpinned actions, cache poisoning, ...), which must report nothing. The pinning,
# permission and checkout rules are also asserted by `cargo test --test chart workflows`.
# Installs the two tools, pinned, into the .tools venv that scripts/chart-tools.sh creates
# (which also brings shellcheck).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.tools/venv"
PINS=(zizmor==1.32.0 check-jsonschema==0.39.0)

[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
stamp="$venv/.workflow-pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ] || [ ! -x "$venv/bin/zizmor" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  echo "check-workflows: pip install ${PINS[*]}" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$root/.tools/cache/pip" "${PINS[@]}"
  echo "${PINS[*]}" > "$stamp"
fi

shopt -s nullglob
workflows=(.github/workflows/*.yaml .github/workflows/*.yml)
[ ${#workflows[@]} -gt 0 ] || { echo "no workflow in .github/workflows" >&2; exit 1; }
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
"$venv/bin/check-jsonschema" --builtin-schema vendor.renovate .github/renovate.json
# The release packaging script and this one.
"$venv/bin/shellcheck" scripts/stamp-release.sh scripts/check-workflows.sh
# Offline: the audits that need the GitHub API (impostor commits, known-vulnerable actions) run
# on GitHub itself, not here. Any finding fails.
"$venv/bin/zizmor" --offline --no-progress .github/workflows

#!/usr/bin/env bash
# Build calprompt as a user gets it and run it from there (`make wheel-check`; .ci/run calls it):
#   python -m build (the sdist, then the wheel built from that sdist) -> a fresh virtual environment -> pip install the
#   wheel with requirements/ci.txt as constraints (pip's own configured index) -> `calprompt --version` (it must name
#   the wheel's version) and `calprompt demo --quick`, run outside the checkout with an empty feature cache.
# Usage: scripts/wheel_check.sh [PYTHON] [WORKDIR]   (WORKDIR: kept for inspection when given; a temporary folder
# removed at the end otherwise)
set -euo pipefail
export HF_HUB_OFFLINE=1
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-$repo/.venv/bin/python}"
if [ -n "${2:-}" ]; then
    work="$(mkdir -p "$2" && cd "$2" && pwd)"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
step() { echo "== wheel-check: $* ($(date +%T))"; }

step "python -m build -> $work/dist"
"$python" -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
wheel=("$work"/dist/calprompt-*-py3-none-any.whl)
sdist=("$work"/dist/calprompt-*.tar.gz)
[ -f "${wheel[0]}" ] && [ -f "${sdist[0]}" ] || { echo "expected one sdist and one wheel in $work/dist" >&2; exit 1; }
version="$(basename "${wheel[0]}" | cut -d- -f2)"
echo "built $(basename "${sdist[0]}") and $(basename "${wheel[0]}")"

step "fresh virtual environment, pip install the wheel (constraints: requirements/ci.txt)"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$repo/requirements/ci.txt" "${wheel[0]}"

# Outside the checkout, so that nothing imports calprompt from src/.
cd "$work"
step "calprompt --version"
got="$("$work/venv/bin/calprompt" --version)"
echo "$got"
[ "$got" = "calprompt $version" ] || { echo "expected 'calprompt $version' (the wheel's version), got '$got'" >&2; exit 1; }
where="$("$work/venv/bin/python" -c 'import calprompt; print(calprompt.__file__)')"
case "$where" in "$work/venv/"*) ;; *) echo "calprompt imported from $where, expected the fresh environment" >&2; exit 1 ;; esac

step "calprompt demo --quick"
CALPROMPT_CACHE="$work/cache" "$work/venv/bin/calprompt" demo --quick --out "$work/demo"
[ -f "$work/demo/report/report.html" ] || { echo "expected $work/demo/report/report.html after the demo" >&2; exit 1; }
step "calprompt report --published paper (the published table ships in the wheel)"
"$work/venv/bin/calprompt" report "$work/demo" --published paper --out "$work/published" >/dev/null
grep -q "coop + ours (paper)" "$work/published/report.md" || { echo "expected the paper's rows in $work/published/report.md" >&2; exit 1; }
step "done"

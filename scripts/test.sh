#!/usr/bin/env bash
# Create (or reuse) the test environment, then run lint, types, the extension validation and the
# whole pytest suite. Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" tests/pure
#
#   SHARP_TEST_VENV   test environment (default: .venv-test in the repository)
#   SHARP_SHARED      the shared folder with spec/ and reference/ (default: ../shared)
#   SHARP_TEST_CACHE  where the 2.8 GB generated reference weights are cached (default: ~/.cache/sharp_blender-tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${SHARP_TEST_VENV:-$ROOT/.venv-test}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.sharp-requirements"
WANT="$(cat requirements/test.txt sidecar/pyproject.toml | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "== creating the test environment in $VENV (torch CPU, bpy 5.0.1; a few minutes the first time)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
        echo "error: the tests need Python 3.11 (bpy 5.0.1 is built for it); set PYTHON=/path/to/python3.11" >&2
        exit 2
    }
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements/test.txt
    "$VENV/bin/python" -m pip install --quiet --no-deps -e sidecar
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export SHARP_SHARED="${SHARP_SHARED:-$(dirname "$ROOT")/shared}"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy sharp_blender
mypy sidecar/sharp_sidecar
echo "== extension manifest (Blender's blender_ext.py)"
python scripts/build_extension.py --out-dir build/dist
echo "== pytest"
python -m pytest "$@"

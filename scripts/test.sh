#!/usr/bin/env bash
# Create (or reuse) the two test environments, then run lint, types, the extension validation and the
# whole pytest suite under bpy 5.0.1, and tests/blender again under bpy 5.3.0.
# Extra arguments go to the bpy 5.0.1 pytest run, e.g. scripts/test.sh -m "not slow" tests/pure
#
#   SHARP_TEST_VENV     bpy 5.0.1 environment: Python 3.11, torch, the sidecar (default: .venv-test)
#   SHARP_TEST_VENV53   bpy 5.3.0 environment: Python 3.13, no torch (default: .venv-test-bpy53)
#   PYTHON, PYTHON313   the interpreters to build them from (default: python3.11; pyenv's 3.13, or python3.13)
#   SHARP_TEST_BPY53    0 skips everything about the bpy 5.3 environment (local runs only; CI runs it)
#   SHARP_TEST_BPY53_ARGS  pytest arguments of the bpy 5.3 run (default: tests/blender, less three tests left to the 3.11 run)
#   SHARP_SHARED        the shared folder with spec/ and reference/ (default: ../shared)
#   SHARP_TEST_CACHE    where the 2.8 GB generated reference weights are cached (default: ~/.cache/sharp_blender-tests)
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

# The bpy 5.3 run: its own environment (bpy 5.3.0 is built for Python 3.13 only; no torch). Tests that
# need torch or the real sidecar run it as a subprocess of SHARP_SIDECAR_PYTHON, the 3.11 environment.
find_python313() {
    local candidates=() root candidate
    if command -v pyenv >/dev/null 2>&1 && root="$(pyenv root 2>/dev/null)"; then
        candidates+=("$root"/versions/3.13*/bin/python3.13)
    fi
    candidates+=("$HOME"/.pyenv/versions/3.13*/bin/python3.13)
    candidate="$(command -v python3.13 || true)"
    [ -n "$candidate" ] && candidates+=("$candidate")
    for candidate in "${candidates[@]}"; do
        if [ -x "$candidate" ] && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
BPY53="${SHARP_TEST_BPY53:-1}"
VENV53="${SHARP_TEST_VENV53:-$ROOT/.venv-test-bpy53}"
if [ "$BPY53" != 0 ]; then
    STAMP53="$VENV53/.sharp-requirements"
    WANT53="$(sha256sum requirements/test-bpy53.txt | cut -d' ' -f1)"
    if [ ! -x "$VENV53/bin/python" ] || [ "$(cat "$STAMP53" 2>/dev/null)" != "$WANT53" ]; then
        PYTHON313="${PYTHON313:-$(find_python313 || true)}"
        if [ -z "$PYTHON313" ]; then
            echo "error: the bpy 5.3 tests need Python 3.13 (bpy 5.3.0 is built for it) and none was found" \
                "(looked in \$(pyenv root)/versions/3.13*, ~/.pyenv/versions/3.13* and python3.13 on PATH)." \
                "Install it (pyenv install 3.13), set PYTHON313=/path/to/python3.13, or skip with SHARP_TEST_BPY53=0" >&2
            exit 2
        fi
        echo "== creating the bpy 5.3 test environment in $VENV53 ($PYTHON313; no torch)"
        start53=$SECONDS
        rm -rf "$VENV53"
        "$PYTHON313" -m venv "$VENV53"
        "$VENV53/bin/python" -m pip install --quiet --upgrade pip
        "$VENV53/bin/python" -m pip install --quiet -r requirements/test-bpy53.txt
        echo "$WANT53" > "$STAMP53"
        echo "   ($((SECONDS - start53)) s)"
    fi
fi
export PATH="$VENV/bin:$PATH"
export SHARP_SHARED="${SHARP_SHARED:-$(dirname "$ROOT")/shared}"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy sharp_blender
mypy sidecar/sharp_sidecar
echo "== extension manifest and zip (blender_ext.py of bpy 5.0.1)"
python scripts/build_extension.py --out-dir build/dist
if [ "$BPY53" != 0 ]; then
    echo "== extension manifest and zip (blender_ext.py of bpy 5.3.0)"
    "$VENV53/bin/python" scripts/build_extension.py --out-dir build/dist-bpy53
fi
echo "== pytest (bpy 5.0.1, Python 3.11)"
python -m pytest "$@"
if [ "$BPY53" != 0 ]; then
    echo "== pytest (bpy 5.3.0, Python 3.13; the sidecar runs under $VENV/bin/python)"
    # Left to the 3.11 run (they test nothing that depends on the Blender version, and cost minutes):
    # the real sidecar's full-size forward (its import path is the fake sidecar's here), the runtime
    # install with real pip (the CPU torch wheel on CI's disk is built for Python 3.11 only; under 3.13
    # pip would download a CUDA build of several GB), and the Points display's EEVEE-vs-Cycles check,
    # which the issue asks of Blender before 5.3.
    BPY53_ARGS=(tests/blender
        --deselect tests/blender/test_ops.py::test_predict_with_the_real_sidecar_on_cpu
        --deselect tests/blender/test_runtime.py::test_install_then_predict_through_the_runtime_then_remove
        --deselect tests/blender/test_points_fidelity.py::test_cycles_and_eevee_agree_with_the_rasteriser_on_a_compact_photo_scene)
    if [ -n "${SHARP_TEST_BPY53_ARGS:-}" ]; then read -r -a BPY53_ARGS <<<"$SHARP_TEST_BPY53_ARGS"; fi
    SHARP_SIDECAR_PYTHON="$VENV/bin/python" "$VENV53/bin/python" -m pytest "${BPY53_ARGS[@]}"
fi

#!/usr/bin/env bash
# Set up sharp_blender: the sidecar's venv (torch + the `sharp` command), the extension zip, and the
# add-on inside Blender when a `blender` executable is found.
#
#   SHARP_VENV   where the sidecar's venv goes (default: ${XDG_DATA_HOME:-~/.local/share}/sharp_blender/venv)
#   BLENDER      Blender executable (default: `blender` on PATH)
#   PYTHON       Python 3.10+ used to create the venv (default: python3)
#   SHARP_TORCH  torch requirement (default: torch>=2.4; CI: torch==2.13.0, a CPU wheel on disk)
#   SHARP_TORCH_INDEX  index URL for the torch step, e.g. PyTorch's CPU wheel index for the small Linux
#                CPU build (default: pip's own index and configuration)
#
# Which torch (CUDA on NVIDIA, else CPU) is decided by sharp_blender/runtime/plan.py, the same code as the
# add-on's "Install SHARP Runtime".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}/sharp_blender"
VENV="${SHARP_VENV:-$DATA/venv}"
PYTHON="${PYTHON:-python3}"

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "error: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.11" >&2; exit 2; }

echo "== sidecar environment: $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
eval "$(PYTHONPATH="$ROOT" "$PYTHON" -m sharp_blender.runtime.plan --shell)"
echo "   $SHARP_TORCH_REASON"
[ -z "$SHARP_TORCH_NOTE" ] || echo "   note: $SHARP_TORCH_NOTE"
# One resolve for torch and (on CUDA) torchvision: torchvision pins the exact torch it was built for.
"${PIP[@]}" --upgrade "${SHARP_TORCH_ARGS[@]}"
EXTRAS="$SHARP_SIDECAR_EXTRAS"
"${PIP[@]}" "$ROOT/sidecar$EXTRAS"
SHARP="$VENV/bin/sharp"
"$SHARP" --version

echo "== extension zip"
if "$VENV/bin/python" -c 'import bpy' 2>/dev/null; then BUILD_PY="$VENV/bin/python"; else BUILD_PY="$PYTHON"; fi
ZIP="$("$BUILD_PY" "$ROOT/scripts/build_extension.py" --out-dir "$ROOT/dist" | tail -n 1)"

BLENDER_BIN="${BLENDER:-$(command -v blender || true)}"
if [ -n "$BLENDER_BIN" ]; then
    echo "== installing into Blender: $BLENDER_BIN"
    "$BLENDER_BIN" --background --factory-startup --command extension install-file -r user_default -e "$ZIP"
    INSTALLED="yes ($BLENDER_BIN, repository user_default, enabled)"
else
    INSTALLED="no blender executable found (set BLENDER=/path/to/blender and re-run, or install the zip by hand)"
fi

cat <<SUMMARY

Done.
  sidecar venv     $VENV
  sharp command    $SHARP            (try: $SHARP predict -i photo.jpg -o out/)
  extension zip    $ZIP
  Blender add-on   $INSTALLED
  checkpoint       downloaded on first use to ~/.cache/torch/hub/checkpoints/sharp_2572gikvuh.pt
SUMMARY

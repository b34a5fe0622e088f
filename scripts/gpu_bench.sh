#!/usr/bin/env bash
# `sharp bench` on the GPU machine: FP32 beside the fast paths, plus kernel profiles.
# Usage (device machine, repo root): OUT=/some/dir PRECISIONS=fp32,bf16-eager,bf16 scripts/gpu_bench.sh
# gsplat (for the render PSNR) is installed from .whl/ when present and pre-compiled in the background.
set -o pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=12
# The sidecar is installed, not put on PYTHONPATH: its setup.py maps the shared sharp_blender/io/ in as sharp_sidecar.io.
python3 -m pip install -q --upgrade --no-deps --no-build-isolation --no-index --target /tmp/sidecar-site ./sidecar || exit 1
export PYTHONPATH=/tmp/sidecar-site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
  # Built in the background while the weights are generated, and waited for before the bench starts: two
  # processes building gsplat's extension at once break each other's build folder.
  python3 -c "from gsplat.cuda._backend import _C; print('gsplat', _C is not None)" >"$OUT/gsplat_build.log" 2>&1 &
  GSPLAT_PID=$!
fi
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
if [ -n "${FOLDER:-}" ]; then
  # `sharp predict` on a folder of 8 photos through the command itself (compile included in its load).
  python3 -c "
import shutil, torch
from pathlib import Path
from sharp_sidecar.cli import bench_reference as bench
torch.save(bench.reference_state_dict(), '/tmp/refweights.pt')
folder = Path('/tmp/photos'); folder.mkdir(exist_ok=True)
photo = bench.synthetic_photo(folder / 'p0.jpg', 1536, 1024)
for i in range(1, 8): shutil.copy(photo, folder / f'p{i}.jpg')
"
  python3 -m sharp_sidecar predict -i /tmp/photos -o /tmp/plys -c /tmp/refweights.pt 2>&1 | tail -4 \
    | tee "$OUT/predict_folder.log"
  BENCH_ARGS="${BENCH_ARGS:-} -c /tmp/refweights.pt"
fi
[ -n "${GSPLAT_PID:-}" ] && wait "$GSPLAT_PID"
python3 -m sharp_sidecar bench --precisions "${PRECISIONS:-fp32,bf16-eager,bf16}" --runs "${RUNS:-5}" \
  --json "$OUT/bench.json" --profile "$OUT" ${BENCH_ARGS:-} -v 2>&1 | tee "$OUT/bench.log"

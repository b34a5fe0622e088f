#!/usr/bin/env bash
# Issue 12 on the GPU machine: `sharp bench --startup` (fresh processes, cold and warm caches, fp32), then
# `sharp bench` with the start-up cases' warm cache. Usage (device machine, repo root):
#   OUT=dir CASES=cold,warm,store,blocking,fp32 PRECISIONS=fp32,fp16,bf16 scripts/gpu_startup.sh
# BENCH_ARGS adds to the second command (e.g. --no-render); SKIP_STARTUP=1 / SKIP_BENCH=1 leave a part out.
set -o pipefail
OUT=${OUT:-startup-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=12
# The sidecar is installed, not put on PYTHONPATH: its setup.py maps the shared sharp_blender/io/ in as sharp_sidecar.io.
python3 -m pip install -q --upgrade --no-deps --no-build-isolation --no-index --target /tmp/sidecar-site ./sidecar || exit 1
export PYTHONPATH=/tmp/sidecar-site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$OUT/gpu.txt"
python3 -c "
import torch
from sharp_sidecar.cli import bench_reference as bench
torch.save(bench.reference_state_dict(), '/tmp/refweights.pt')
"
if [ -z "${SKIP_STARTUP:-}" ]; then
  timeout "${STARTUP_TIMEOUT:-420}" python3 -m sharp_sidecar bench --startup -c /tmp/refweights.pt \
    --cases "${CASES:-cold,warm,store,blocking,fp32}" --cache-dir /tmp/sharpcache --max-wait "${MAX_WAIT:-150}" \
    --runs "${RUNS:-5}" --json "$OUT/startup.json" 2>&1 | tee "$OUT/startup.log"
fi
if [ -z "${SKIP_BENCH:-}" ]; then
  if [ -n "${GSPLAT:-}" ]; then
    python3 -c "from gsplat.cuda._backend import _C; print('gsplat', _C is not None)" >"$OUT/gsplat_build.log" 2>&1
  fi
  SHARP_CACHE_DIR=/tmp/sharpcache timeout "${BENCH_TIMEOUT:-400}" python3 -m sharp_sidecar bench \
    --precisions "${PRECISIONS:-fp32,fp16,bf16}" --runs "${RUNS:-7}" -c /tmp/refweights.pt \
    --json "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
fi

#!/usr/bin/env bash
# The one prepared run for a lent GPU (the device tool): builds the extension there, runs the
# CUDA and Triton tests, then times every op and backend against eager PyTorch and
# torch.compile of the reference, with a device-to-device copy for the card's bandwidth.
# Prints a short table; writes gpu.txt, tests.log, bench.json and bench.md under $OUT.
#   device run:  bash bench/gpu_check.sh        (OUT is set by the device tool)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results/gpu-latest}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

start=$(date +%s)
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -n 5
python3 -c "import cprl_fast; assert cprl_fast.has_cuda_kernels(), 'no CUDA kernels built'"
echo "build: $(( $(date +%s) - start )) s"

start=$(date +%s)
python3 -m pytest tests -q -x -k "cuda" -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -n 15
echo "tests: $(( $(date +%s) - start )) s"

start=$(date +%s)
python3 -m bench.run --device cuda --out "$OUT/bench.json" --markdown "$OUT/bench.md" 2>"$OUT/bench.log"
echo "bench: $(( $(date +%s) - start )) s"

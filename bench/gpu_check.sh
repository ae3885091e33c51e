#!/usr/bin/env bash
# The one prepared run for a lent GPU (the device tool), at most about 8 minutes, answering every
# question in one go; a failure in one step never hides the next.
#   1. build (time-limited, whole log kept; a failed build stops here with the log's tail)
#   2. benchmark first: every op and pass for native, triton, eager and torch.compile in float32
#      and bfloat16, each row printed and saved as measured, each checked against eager
#   3. the tests, one op file at a time, without -x (every failure reported)
#   4. compute-sanitizer memcheck and racecheck over every op forward and backward
#   5. end to end: CA-ResNet-50 vs ResNet-50 (batch 32, 224 px, bf16 autocast, channels_last),
#      a CPRL training iteration (faithful, fast) vs a plain one, PGD-10 images/s
# Writes gpu.txt, build.log, bench.json, bench.md, tests.log, sanitizer.log, e2e.json under $OUT.
#
#   device run:   bash bench/gpu_check.sh                   (OUT is set by the device tool)
#   CPU stand-in: bash bench/gpu_check.sh --device cpu      (small shapes, no build, no
#                 sanitizer: tests the script's plumbing; tests/test_gpu_check.py runs it)
set -uo pipefail
export PYTHONUNBUFFERED=1
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; fi
OUT=${OUT:-bench/results/gpu-latest}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
step() { echo; echo "== $1 ($(date +%T))"; }

step "machine"
{
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "CPU stand-in: $(nproc) cores"
  fi
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"

if [ "$DEVICE" = cuda ]; then
  step "build"
  start=$(date +%s)
  if ! MAX_JOBS=16 CPRL_FAST_CUDA=1 timeout 300 $PY -m pip install --no-build-isolation \
      --no-deps -e . >"$OUT/build.log" 2>&1; then
    echo "build FAILED; the last lines of build.log:"
    tail -n 40 "$OUT/build.log"
    exit 1
  fi
  $PY -c "import cprl_fast; assert cprl_fast.has_cuda_kernels(), 'no CUDA kernels built'" \
    || { tail -n 20 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
  BENCH_LIMIT=200 TEST_FILTER=cuda
  E2E_ARGS="--arch resnet50 --batch 32 --size 224 --bf16 --channels-last"
else
  export CPRL_BENCH_SMALL=1
  BENCH_LIMIT=120
  TEST_FILTER="cpu-native and not gradcheck and not matches_reference and not dtypes and not compiled"
  E2E_ARGS="--arch resnet18 --batch 2 --size 32"
fi

step "benchmark"
timeout "$BENCH_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 \
  --out "$OUT/bench.json" --markdown "$OUT/bench.md" || echo "benchmark stopped early (exit $?)"

step "tests"
: >"$OUT/tests.log"
for f in tests/test_op_specs.py tests/test_rank_mask.py tests/test_intervene.py \
         tests/test_attack_step.py tests/test_compile.py tests/test_triton_helpers.py; do
  echo "-- $f" | tee -a "$OUT/tests.log"
  timeout 90 $PY -m pytest "$f" -q -k "$TEST_FILTER" -p no:cacheprovider 2>&1 \
    | tee -a "$OUT/tests.log" | tail -n 4
done

step "compute-sanitizer"
: >"$OUT/sanitizer.log"
if [ "$DEVICE" = cuda ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    echo "-- $tool" | tee -a "$OUT/sanitizer.log"
    timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 3 $PY -m bench.sanitize \
      --device cuda >>"$OUT/sanitizer.log" 2>&1
    echo "$tool: exit $?" | tee -a "$OUT/sanitizer.log"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log" | tail -n 1
  done
else
  timeout 120 $PY -m bench.sanitize --device "$DEVICE" 2>&1 | tee -a "$OUT/sanitizer.log"
fi

step "end to end"
# shellcheck disable=SC2086
timeout 180 $PY -m bench.end_to_end $E2E_ARGS --device "$DEVICE" --out "$OUT/e2e.json" \
  || echo "end to end stopped early (exit $?)"
step "done"

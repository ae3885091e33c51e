#!/usr/bin/env bash
# The one prepared run for a lent GPU (the device tool), answering every question in one go
# within a fixed time (GPU_CHECK_SECONDS, default 470: the lease is about 15 minutes in all);
# a failure or time-out in one step never hides the next, and every step writes as it goes.
# Ordered by what is owed (issue 25):
#   1. build (time-limited, whole log kept; a failed build stops here with the log's tail)
#   2. end to end, interleaved (bench/end_to_end.py: 21 rounds of 20 synchronised calls per side,
#      cudnn.benchmark on, GPU-busy fraction per side): CA-ResNet-50 vs ResNet-50 (batch 32,
#      224 px, bf16 autocast, channels_last), a CPRL training iteration (faithful, fast) vs a
#      plain one and PGD-10 images/s (eager step, fused step, graph-captured loop), all in
#      that setting
#   3. op rows at the targets' shapes (rank_mask and intervene forward + backward, float32 and
#      bfloat16): providers interleaved per round, device time of CUDA graph replays and of
#      plain calls (CUDA events), host time per call, each row checked against eager
#   4. using a model (GPU only; bench/model_check.py): train a tiny CPRL model there, certify
#      it (against the CPU's certificate), export it as pt2 + AOTInductor package for the
#      device and load that in a fresh process, audit it
#   5. the op tests (every backend on the device, workers in parallel when pytest-xdist is
#      there), and beside them compute-sanitizer memcheck then racecheck over every op forward
#      and backward (bench/sanitize.py, itself checked against the reference)
#   6. the remaining op rows (every other op and pass), in the time left
# Writes timing.md (how each number is timed), gpu.txt, build.log, e2e.json, bench.json,
# bench.md, tests.log, sanitizer.log, bench-rest.*, bench-attack.* under $OUT.
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
# GPU_CHECK_SECONDS=none: no deadline and no step limits (the tests run the CPU stand-in so,
# on a machine whose load is not theirs to know)
exec 3>&1
if [ "${GPU_CHECK_SECONDS:-470}" = none ]; then
  DEADLINE=0
  step() { echo; echo "== $1 ($(date +%T), no deadline)"; }
  left() { echo 0; }  # timeout 0: no limit
else
  DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-470} ))
  step() { echo; echo "== $1 ($(date +%T), $(( DEADLINE - $(date +%s) )) s left)"; }
  # left CAP: seconds a step may take: CAP, or what is left before the deadline if less (>= 5).
  left() { local l=$(( DEADLINE - $(date +%s) )); (( l < $1 )) || l=$1; (( l > 5 )) || l=5; echo "$l"; }
fi
# limited CAP CMD...: CMD under its time limit; a command cut by it says so on the console
limited() {
  local cap; cap=$(left "$1"); shift
  timeout "$cap" "$@"; local rc=$?
  if [ "$rc" = 124 ]; then echo "CUT by its time limit of $cap s: $*" >&3; fi
  return "$rc"
}

step "machine"
# how every number of this run was timed, for the results README (issue 25: each GPU results
# README says how each number was timed)
cat >"$OUT/timing.md" <<'TIMING'
# How this run's numbers were timed (bench/gpu_check.sh)

- `e2e.json` (bench/end_to_end.py): each group's sides alternate round by round, 21 rounds of
  20 synchronised calls per side on CUDA (PGD-10: 2 calls, 20 forward + backward passes);
  `*_fwd_bwd_s`, `pgd10_*_images_per_s` and the ratios are wall time per call (device
  synchronised before the first call and after the last), ratios the median of per-round
  ratios; `host_s` is the host's time until the last call returned, `device_s` CUDA events
  around the calls, `gpu_busy` torch.profiler's union of kernel intervals over the wall time
  of 20 further calls. cudnn.benchmark on; ResNet-50, 224 px, batch 32, bfloat16 autocast,
  channels_last for every case.
- `bench.json`, `bench-rest.json`, `bench-attack.json` (bench/run.py): the providers of a row
  alternate round by round, 21 rounds of 20 calls, the L2 cache overwritten (256 MiB) before
  each call outside its events; `seconds` is the CUDA-event device time of
  replays of a CUDA graph of one call (`timing: cuda-graph`), or of plain calls where capture
  failed or for the backward-only pass (`timing: cuda-events`; `graph_error` says why);
  `host_seconds` is host time per plain call; `speedup_vs_*` compares two rows on a clock
  both have; `copy_fraction` is the op's minimum bytes over `seconds` against a 1 GiB copy
  timed in the same process.
TIMING
{
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "CPU stand-in: $(nproc) cores"
  fi
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/gpu.txt"

PYTEST_ARGS=(-q -rfE -p no:cacheprovider)
if $PY -c "import xdist" 2>/dev/null; then PYTEST_ARGS+=(-n 8); fi
if $PY -c "import pytest_timeout" 2>/dev/null; then PYTEST_ARGS+=(--timeout 90); fi
if [ "$DEVICE" = cuda ]; then
  step "build"
  start=$(date +%s)
  if ! MAX_JOBS=16 CPRL_FAST_CUDA=1 limited 240 $PY -m pip install \
      --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    echo "build FAILED; the last lines of build.log:"
    tail -n 40 "$OUT/build.log"
    exit 1
  fi
  $PY -c "import cprl_fast; assert cprl_fast.has_cuda_kernels(), 'no CUDA kernels built'" \
    || { tail -n 20 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
  TEST_FILTER=cuda TEST_LIMIT=120 BENCH_LIMIT=140 E2E_LIMIT=170 REST_LIMIT=60 BENCH_ARGS=""
  E2E_ARGS="--arch resnet50 --batch 32 --size 224 --bf16 --channels-last"
else
  export CPRL_BENCH_SMALL=1
  TEST_FILTER="cpu-native and not gradcheck and not matches_reference and not dtypes and not compiled"
  TEST_LIMIT=200 BENCH_LIMIT=120 E2E_LIMIT=180 REST_LIMIT=120 BENCH_ARGS="--rounds 3"
  # channels_last as on the GPU; bfloat16 autocast left out: this CPU emulates bfloat16
  # convolutions, 3-4x slower (tests/test_bench_train_step.py runs that path)
  E2E_ARGS="--arch resnet18 --batch 2 --size 32 --channels-last --rounds 3"
fi

step "end to end"
# shellcheck disable=SC2086
limited "$E2E_LIMIT" $PY -m bench.end_to_end $E2E_ARGS --device "$DEVICE" \
  --out "$OUT/e2e.json" || echo "end to end stopped early (exit $?)"

step "op rows at the targets' shapes"
# shellcheck disable=SC2086
limited "$BENCH_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 $BENCH_ARGS \
  --ops rank_mask,intervene --passes fwdbwd \
  --out "$OUT/bench.json" --markdown "$OUT/bench.md" >/dev/null \
  || echo "op rows stopped early (exit $?)"
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"

if [ "$DEVICE" = cuda ]; then
  step "using a model"
  limited 150 $PY -m bench.model_check --device cuda 2>/tmp/model_check.err \
    || { echo "model check stopped (exit $?); its stderr ends:"; tail -n 15 /tmp/model_check.err; }
fi
step "tests and compute-sanitizer"
: >"$OUT/sanitizer.log"
(
  if [ "$DEVICE" = cuda ] && command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
      echo "-- $tool" >>"$OUT/sanitizer.log"
      limited 120 compute-sanitizer --tool "$tool" --error-exitcode 3 \
        $PY -m bench.sanitize --device cuda >>"$OUT/sanitizer.log" 2>&1
      echo "$tool: exit $?" >>"$OUT/sanitizer.log"
    done
  else
    limited 120 $PY -m bench.sanitize --device "$DEVICE" >>"$OUT/sanitizer.log" 2>&1
  fi
) &
sanitizer=$!
limited "$TEST_LIMIT" $PY -m pytest tests/test_op_specs.py tests/test_rank_mask.py \
  tests/test_intervene.py tests/test_attack_step.py tests/test_compile.py \
  tests/test_triton_helpers.py -k "$TEST_FILTER" "${PYTEST_ARGS[@]}" >"$OUT/tests.log" 2>&1
echo "tests: exit $?"
tail -n 15 "$OUT/tests.log"
wait "$sanitizer"
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|exit|sanitize:" "$OUT/sanitizer.log"

step "the other op rows"
# shellcheck disable=SC2086
limited "$REST_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 $BENCH_ARGS \
  --ops rank_mask,intervene --passes fwd,bwd \
  --out "$OUT/bench-rest.json" --markdown "$OUT/bench-rest.md" >/dev/null \
  || echo "op rows stopped early (exit $?)"
# shellcheck disable=SC2086
limited "$REST_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 $BENCH_ARGS \
  --ops attack_step --out "$OUT/bench-attack.json" --markdown "$OUT/bench-attack.md" \
  >/dev/null || echo "op rows stopped early (exit $?)"
for f in bench-rest.md bench-attack.md; do [ -f "$OUT/$f" ] && cat "$OUT/$f"; done
step "done"

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
#   4. using a model (GPU only; bench/model_check.py): train a tiny CPRL model there, check that
#      a training iteration makes no host synchronisation, certify it (against the CPU's),
#      export it as pt2 + AOTInductor package for the device and load that in a fresh process,
#      audit it
#   5. the audit's full suite timed against its floor (bench/audit_time.py: the CPRL ResNet-50,
#      224 px, 32 built-in images scaled to 250; each pass's cost measured before and after)
#   6. the op tests (every backend on the device, workers in parallel when pytest-xdist is
#      there) and the CUDA tests of the host-to-device copies and the certificates' noise
#      (tests/test_devices.py, tests/test_certify.py), ranking pretraining on the GPU
#      (tests/test_ranking.py), and beside them compute-sanitizer
#      memcheck then racecheck over every op forward and backward (bench/sanitize.py, itself
#      checked against the reference)
#   7. the op rows of step 3 in channels_last (bfloat16 first, the end-to-end setting)
#   8. each kernel of those rows under Nsight Compute (bench/kernel_profile.py: device time,
#      DRAM bytes, L2 hit rate per kernel, against a copy of the same map; native, then Triton)
#   9. the remaining op rows (every other op and pass), in the time left
# Writes timing.md (how each number is timed), gpu.txt, build.log, e2e.json, bench.json,
# bench.md, audit.json, tests.log, sanitizer.log, bench-cl.*, kernels.* (and kernels-manifest.json),
# bench-rest.*, bench-attack.* under $OUT.
#
#   device run:   bash bench/gpu_check.sh                   (OUT is set by the device tool)
#   CPU stand-in: bash bench/gpu_check.sh --device cpu      (small shapes, no build, no
#                 sanitizer: tests the script's plumbing; tests/test_gpu_check.py runs it)
#   some steps:   GPU_CHECK_ONLY=tests,kernels bash bench/gpu_check.sh   (a second call on a
#                 warm machine, for what the first one's time limit cut; the machine step and
#                 the build always run)
set -uo pipefail
export PYTHONUNBUFFERED=1
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; fi
OUT=${OUT:-bench/results/gpu-latest}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# packages carried for the GPU machine (bench/gpu_deps.sh), where there are any
if [ -d .gpu-deps ]; then export PYTHONPATH="$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"; fi
# the steps GPU_CHECK_ONLY may name, in the order they run
STEPS="e2e ops model audit tests ops-cl kernels rest"
ONLY=${GPU_CHECK_ONLY:-}
for s in ${ONLY//,/ }; do
  [[ " $STEPS " == *" $s "* ]] \
    || { echo "gpu_check: GPU_CHECK_ONLY: '$s' is not one of ${STEPS// /, }" >&2; exit 2; }
done
# wanted KEY: whether step KEY runs (all of them when GPU_CHECK_ONLY is unset or empty)
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
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
- `bench.json`, `bench-cl.json`, `bench-rest.json`, `bench-attack.json` (bench/run.py; a
  row's `layout` says whether its maps and gradients were NCHW, `contiguous`, or NHWC,
  `channels_last`, as in bench-cl.json): the providers of a row
  alternate round by round, 21 rounds of 20 calls, the L2 cache overwritten (256 MiB) before
  each call outside its events; `seconds` is the CUDA-event device time of
  replays of a CUDA graph of one call (`timing: cuda-graph`), or of plain calls where capture
  failed or for the backward-only pass (`timing: cuda-events`; `graph_error` says why);
  `host_seconds` is host time per plain call; `speedup_vs_*` compares two rows on a clock
  both have; `copy_fraction` is the op's minimum bytes over `seconds` against a 1 GiB copy
  timed in the same process.
- `audit.json` (bench/audit_time.py): the audit's suite at its four eps, once, on 32 built-in
  images in batches of 16 (wall time, device synchronised), scaled linearly to 250; its floor
  is the suite's passes per image times the median per-image time of an eval forward and of a
  forward + input-gradient backward at batch 16 (rounds alternating them), measured before
  and after the audit (`floor_s`, low first); `over_floor` is the scaled time over their mean.
- `kernels.csv` (ncu's raw page), `kernels.md`, `kernels.json` (bench/kernel_profile.py): one
  call per case after unprofiled warm-up, each kernel's duration as ncu measures it (kernel by
  kernel, so no launch gaps), `--cache-control none` (a kernel finds in L2 what the previous
  one left, as in a real call); per case the DRAM bytes over one map (the passes it made) and
  the share of copy bandwidth its kernels' time would give with no gaps.
TIMING
{
  if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    # the CUDA compiler the build will use (CUB, and so the radix sort, come with it)
    echo "nvcc: $(nvcc --version 2>&1 | grep -i release || echo 'not found on the PATH')"
  else
    echo "CPU stand-in: $(nproc) cores"
  fi
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  $PY -c "import importlib.util as u; print('piq', 'found' if u.find_spec('piq') else
    'MISSING: the built-in data cannot be generated (bash bench/gpu_deps.sh, carry .gpu-deps)')"
  # the built-in data's photographs: scikit-image's (builtin-v1 and v2) and matplotlib's (v2)
  for m in skimage matplotlib; do
    $PY -c "import importlib.util as u; print('$m', 'found' if u.find_spec('$m') else
      'MISSING: its photographs are among the built-in data\'s references')"
  done
} 2>&1 | tee "$OUT/gpu.txt"

PYTEST_ARGS=(-q -rfE -p no:cacheprovider)
# 8 workers on the GPU machine's 16 cores; the CPU stand-in runs its few tests in one process
# (8 workers there cost 8 imports of torch, most of that step's time on a 2-core machine)
if [ "$DEVICE" = cuda ] && $PY -c "import xdist" 2>/dev/null; then PYTEST_ARGS+=(-n 8); fi
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
  # what was built, and with what (cprl-fast info's lines), at the end of gpu.txt
  $PY -c "import cprl_fast; assert cprl_fast.has_cuda_kernels(), 'no CUDA kernels built'
for key, value in cprl_fast.environment().items(): print(f'{key}: {value}')" >>"$OUT/gpu.txt" \
    || { tail -n 20 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
  TEST_FILTER=cuda TEST_LIMIT=120 BENCH_LIMIT=140 E2E_LIMIT=170 CL_LIMIT=120 NCU_LIMIT=120
  REST_LIMIT=60 AUDIT_LIMIT=120
  AUDIT_ARGS="--arch resnet50 --size 224 --images 32 --rounds 5"
  BENCH_ARGS=""
  E2E_ARGS="--arch resnet50 --batch 32 --size 224 --bf16 --channels-last"
else
  export CPRL_BENCH_SMALL=1
  TEST_FILTER="cpu-native and not gradcheck and not matches_reference and not dtypes and not compiled"
  TEST_LIMIT=200 BENCH_LIMIT=120 E2E_LIMIT=180 CL_LIMIT=120 NCU_LIMIT=120 REST_LIMIT=120
  AUDIT_LIMIT=120 AUDIT_ARGS="--arch resnet18 --size 32 --images 4 --rounds 3"
  BENCH_ARGS="--rounds 3"
  # channels_last as on the GPU; bfloat16 autocast left out: this CPU emulates bfloat16
  # convolutions, 3-4x slower (tests/test_bench_train_step.py runs that path)
  E2E_ARGS="--arch resnet18 --batch 2 --size 32 --channels-last --rounds 3"
fi

if wanted e2e; then
  step "end to end"
  # shellcheck disable=SC2086
  limited "$E2E_LIMIT" $PY -m bench.end_to_end $E2E_ARGS --device "$DEVICE" \
    --out "$OUT/e2e.json" || echo "end to end stopped early (exit $?)"
fi

if wanted ops; then
  step "op rows at the targets' shapes"
  # shellcheck disable=SC2086
  limited "$BENCH_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 \
    $BENCH_ARGS --ops rank_mask,intervene --passes fwdbwd \
    --out "$OUT/bench.json" --markdown "$OUT/bench.md" >/dev/null \
    || echo "op rows stopped early (exit $?)"
  [ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
fi

if [ "$DEVICE" = cuda ] && wanted model; then
  step "using a model"
  limited 150 $PY -m bench.model_check --device cuda 2>/tmp/model_check.err \
    || { echo "model check stopped (exit $?); its stderr ends:"; tail -n 15 /tmp/model_check.err; }
fi

if wanted audit; then
  step "the audit's suite against its floor"
  # shellcheck disable=SC2086
  limited "$AUDIT_LIMIT" $PY -m bench.audit_time --device "$DEVICE" $AUDIT_ARGS \
    --out "$OUT/audit.json" 2>"$OUT/audit.log" \
    || { echo "audit timing stopped early (exit $?); audit.log ends:"; tail -n 5 "$OUT/audit.log"; }
fi

if wanted tests; then
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
    tests/test_triton_helpers.py tests/test_devices.py tests/test_certify.py tests/test_ranking.py \
    -k "$TEST_FILTER" "${PYTEST_ARGS[@]}" \
    >"$OUT/tests.log" 2>&1
  echo "tests: exit $?"
  tail -n 15 "$OUT/tests.log"
  wait "$sanitizer"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|exit|sanitize:" "$OUT/sanitizer.log"
fi

if wanted ops-cl; then
  step "op rows at the targets' shapes, channels_last"
  # shellcheck disable=SC2086
  limited "$CL_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype bfloat16,float32 \
    $BENCH_ARGS --layout channels_last --ops rank_mask,intervene --passes fwdbwd \
    --out "$OUT/bench-cl.json" --markdown "$OUT/bench-cl.md" >/dev/null \
    || echo "op rows stopped early (exit $?)"
  [ -f "$OUT/bench-cl.md" ] && cat "$OUT/bench-cl.md"
fi

if ! wanted kernels; then
  :
elif [ "$DEVICE" = cuda ] && command -v ncu >/dev/null; then
  step "kernels under Nsight Compute"
  # the driver starts no case past its budget, so that ncu still writes what it profiled
  cap=$(left "$NCU_LIMIT") budget=()
  (( cap == 0 )) || budget=(--budget $(( cap > 60 ? cap - 30 : cap / 2 )))
  limited "$NCU_LIMIT" ncu --csv --page raw --print-units base --profile-from-start off \
    --cache-control none --metrics "$($PY -m bench.kernel_profile --print-metrics)" \
    $PY -m bench.kernel_profile --device cuda --provider native,triton "${budget[@]}" \
    --manifest "$OUT/kernels-manifest.json" >"$OUT/kernels.csv" 2>"$OUT/kernels.log" \
    || { echo "ncu stopped early (exit $?); kernels.log ends:"; tail -n 5 "$OUT/kernels.log"; }
  $PY -m bench.kernel_profile --summarize "$OUT/kernels.csv" \
    --manifest "$OUT/kernels-manifest.json" --markdown "$OUT/kernels.md" \
    --out "$OUT/kernels.json" | head -n 70 || echo "no kernel summary; kernels.csv is kept"
else
  step "kernels under Nsight Compute"
  # no profiler here: the driver's calls alone (the plumbing)
  limited "$NCU_LIMIT" $PY -m bench.kernel_profile --device "$DEVICE" --dtype float32 \
    --manifest "$OUT/kernels-manifest.json" 2>"$OUT/kernels.log" \
    || echo "kernel profile stopped early (exit $?)"
fi

if wanted rest; then
  step "the other op rows"
  # shellcheck disable=SC2086
  limited "$REST_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 \
    $BENCH_ARGS --ops rank_mask,intervene --passes fwd,bwd \
    --out "$OUT/bench-rest.json" --markdown "$OUT/bench-rest.md" >/dev/null \
    || echo "op rows stopped early (exit $?)"
  # shellcheck disable=SC2086
  limited "$REST_LIMIT" $PY -m bench.run --device "$DEVICE" --dtype float32,bfloat16 \
    $BENCH_ARGS --ops attack_step --out "$OUT/bench-attack.json" \
    --markdown "$OUT/bench-attack.md" >/dev/null || echo "op rows stopped early (exit $?)"
  for f in bench-rest.md bench-attack.md; do [ -f "$OUT/$f" ] && cat "$OUT/$f"; done
fi
step "done"

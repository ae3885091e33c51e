#!/usr/bin/env bash
# Issue 27's two studies at full scale (50 epochs, every tile of 10 images per test scene) on
# models that learn the built-in data (--recipe native), on a lent GPU after bench/gpu_check.sh,
# resumable across sessions. On the 2-core VM they would take about 50 CPU-hours
# (docs/study.md; the committed robustness-builtin-v2-native is a smaller scale run there), so
# they run here, a few minutes per session:
#   1. copies what is committed under results/<study>/ (STUDY_RESULTS) into $OUT/<study>/;
#   2. resumes the robustness study there, then the certified one, for at most STUDY_SECONDS
#      (default 300) in all (a run cut by the limit keeps every audit it finished);
#   3. removes the trained models (runs/*/models: about 45 MB each, not committed), so what comes
#      back under $OUT is the audits and the report of the runs finished so far.
# Commit $OUT/<study>/ as results/<study>/ and run it again in the next session until both
# reports hold every run (the script prints how many they hold: 6 and 3).
#
#   device run:   bash bench/study_gpu.sh                (OUT is set by the device tool)
#   CPU stand-in: bash bench/study_gpu.sh --device cpu   (tiny studies in reports/: the
#                 plumbing only; tests/test_study_gpu.py runs it)
set -uo pipefail
export PYTHONUNBUFFERED=1
# packages carried for the GPU machine (bench/gpu_deps.sh), where there are any
if [ -d .gpu-deps ]; then export PYTHONPATH="$PWD/.gpu-deps${PYTHONPATH:+:$PYTHONPATH}"; fi
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; fi
OUT=${OUT:-reports/study-gpu}
mkdir -p "$OUT"
CLI=(${PYTHON:-python3} -m cprl_fast_cli --threads "${STUDY_THREADS:-$(nproc)}")
DEADLINE=$(( $(date +%s) + ${STUDY_SECONDS:-300} ))

# a fresh machine (no gpu_check.sh before in this lease) builds the extension first, as
# gpu_check.sh does
if [ "$DEVICE" = cuda ] && ! "${CLI[0]}" -c "import sys, cprl_fast
sys.exit(not cprl_fast.has_cuda_kernels())" 2>/dev/null; then
  echo "== build ($(date +%T))"
  if ! MAX_JOBS=16 CPRL_FAST_CUDA=1 timeout 300 "${CLI[0]}" -m pip install --no-build-isolation \
      --no-deps -e . >"$OUT/study-build.log" 2>&1; then
    echo "build FAILED; the last lines of study-build.log:"; tail -n 30 "$OUT/study-build.log"
    exit 1
  fi
fi

# The committed studies' commands (docs/study.md): the robustness study over 5 models, 3 folds x
# 2 seeds and 1-8/255; the certified one over the plain and noise-trained models.
ROBUST=(--models resnet,ca,cprl,sat,nt --seeds 0,1)
CERTIFIED=(--models resnet,ca,cprl,resnet-noise,ca-noise,cprl-noise --seeds 0 --eps 1/255,4/255
           --attack fgsm,pgd,rank --certify 0.25 --certify-n 300)
COMMON=(--recipe native --dataset builtin-v2 --folds 3 --per-scene 10 --device "$DEVICE")
if [ "$DEVICE" = cuda ]; then
  SUFFIX=gpu  # (the CPU-scale study of docs/study.md is robustness-builtin-v2-native)
else  # the stand-in: 2 folds, 2 training steps, 3 images of 64 px (one tile) per scene, one
  # budget and one attack
  SUFFIX=standin
  ROBUST=(--models resnet,ca --seeds 0)
  CERTIFIED=(--models resnet,resnet-noise --seeds 0 --certify 0.25 --certify-n 8)
  COMMON=(--recipe native --dataset builtin-v2 --folds 2 --per-scene 3 --device cpu
          --image-size 64 --max-steps 2 --eps 1/255 --attack fgsm)
fi
RESULTS=${STUDY_RESULTS:-results}

status=0
for study in robustness certified; do
  name="$study-builtin-v2-$SUFFIX"
  if [ -d "$RESULTS/$name" ] && [ ! -d "$OUT/$name" ]; then cp -r "$RESULTS/$name" "$OUT/$name"; fi
  left=$(( DEADLINE - $(date +%s) ))
  if (( left < 10 )); then echo "== $name: no time left (STUDY_SECONDS)"; status=124; continue; fi
  if [ "$study" = robustness ]; then args=("${ROBUST[@]}"); else args=("${CERTIFIED[@]}"); fi
  echo "== $name ($(date +%T), at most $left s)"
  timeout "$left" "${CLI[@]}" study "${COMMON[@]}" "${args[@]}" --out-dir "$OUT/$name" \
    2>&1 | grep -v -E '^\s*$|it/s\]|s/it\]|eps/s\]|s/eps\]' | tail -n 30
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ]; then echo "== $name: cut by the time limit (resume it in the next session)"; fi
  (( rc == 0 )) || status=$rc
  rm -rf "$OUT/$name"/runs/*/models
  audits=$(find "$OUT/$name/runs" -name report.json -path '*/audit/*' 2>/dev/null | wc -l)
  runs=$("${CLI[0]}" -c "import json, sys; r = json.load(open(sys.argv[1]))
print(len(r['runs']), 'of', r['sizes']['planned'], 'runs')" "$OUT/$name/report.json" \
    2>/dev/null || echo "no run")
  echo "== $name: $audits audits finished; the report holds $runs"
done
exit "$status"

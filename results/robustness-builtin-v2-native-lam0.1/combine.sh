#!/usr/bin/env bash
# CPRL with lambda = 0.1 (this folder's audits) beside the robustness study's CPRL (the paper's
# lambda = 1), CA alone and plain ResNet, as one study folder, combined/, summarised from the
# audits alone by `cprl-fast study --report-only`. Its first model, the reference of every
# paired difference, is CPRL at lambda 0.1. Trains and attacks nothing; from the repository
# root:  bash results/robustness-builtin-v2-native-lam0.1/combine.sh
set -euo pipefail
here=results/robustness-builtin-v2-native-lam0.1
study=results/robustness-builtin-v2-native
out=$here/combined
rm -rf "$out"
mkdir -p "$out/splits"
cp "$here"/splits/*.json "$out/splits/"
python - "$here/study.json" "$out/study.json" <<'PY'
import json
import sys

settings = json.load(open(sys.argv[1]))
settings["models"] = ["cprl-lam0.1", "cprl", "ca", "resnet"]
json.dump(settings, open(sys.argv[2], "w"), indent=1)
PY
for run in "$here"/runs/*; do
  name=$(basename "$run")
  for model in cprl-lam0.1:$here cprl:$study ca:$study resnet:$here; do
    from=${model#*:}/runs/$name/audit/${model%%:*}/report.json
    [ -f "$from" ] || continue  # a run this folder has not finished: left out of the summary
    mkdir -p "$out/runs/$name/audit/${model%%:*}"
    cp "$from" "$out/runs/$name/audit/${model%%:*}/"
  done
done
cprl-fast study --report-only --out-dir "$out" > /dev/null
echo "wrote $out/report.md"

#!/usr/bin/env bash
# The Python packages the GPU machine lacks, put where the device tool can carry them: run it here
# (this machine reaches PyPI; the GPU machine reaches nothing), then name .gpu-deps in the run's
# carry list; bench/gpu_check.sh and bench/study_gpu.sh put it on PYTHONPATH when it is there.
#   piq: the built-in dataset's scores (MS-SSIM) when its cache is generated (the audit step,
#        the model check and the studies load it); pure Python, no dependency beyond torch.
set -euo pipefail
DEST=${1:-.gpu-deps}
rm -rf "$DEST"
python3 -m pip install --quiet --no-deps --target "$DEST" piq==0.8.0
du -sh "$DEST"

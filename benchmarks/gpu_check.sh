#!/usr/bin/env bash
# Validate a GPU in one call: the GPU tests, the benchmarks (--device cuda --bf16) and a 200-step Trainer run of
# resnet50; appends ONE JSON line to benchmarks/results/cuda.jsonl. Installs nothing (the README's install is enough).
#   bash benchmarks/gpu_check.sh            # one CUDA GPU, about 5-6 minutes (budget: under 8)
#   bash benchmarks/gpu_check.sh --smoke    # CPU, tiny sizes: writes to $HUBTUNE_GPU_CHECK_OUTPUT or a temp file
# See benchmarks/gpu_check.py for what runs and what the JSON holds.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"

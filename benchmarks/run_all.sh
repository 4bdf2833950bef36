#!/usr/bin/env bash
# Run every benchmark once and append the results to benchmarks/results/<device>.jsonl.
#   bash benchmarks/run_all.sh            # CPU
#   bash benchmarks/run_all.sh cuda       # GPU, bf16, plus a 224 px Core-tuning run
# For a one-call validation of a GPU (tests + benchmarks + a Trainer run) use benchmarks/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
out="benchmarks/results/${device}.jsonl"
mkdir -p benchmarks/results
extra=()
[ "$device" = "cuda" ] && extra=(--bf16)
for classes in 10 100; do
  python benchmarks/bench_core_tuning.py --device "$device" "${extra[@]}" --num-classes "$classes" --repeats 40 --output "$out"
done
[ "$device" = "cuda" ] && python benchmarks/bench_core_tuning.py --device cuda --bf16 --image-size 224 --num-classes 1000 --output "$out"
python benchmarks/bench_adaptivemix_gan.py --device "$device" "${extra[@]}" --output "$out"
python benchmarks/bench_adaptivemix_gan.py --device "$device" "${extra[@]}" --arch resnet --output "$out"
# torch.compile (inductor) against eager; on CPU the first call compiles for ~1-2 minutes
python benchmarks/bench_compile.py --device "$device" "${extra[@]}" --output "$out"
[ "$device" = "cpu" ] && python benchmarks/bench_dataloading.py --mode step --output "$out"
# hubtune's map-style and streaming input pipelines against timm's create_loader, 224 px, 0 / 2 / all-core workers
python benchmarks/bench_dataloading.py --output "$out"
exit 0

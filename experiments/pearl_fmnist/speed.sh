#!/usr/bin/env bash
# The speed/memory side of the PEARL benchmark: the default preset (method=pearl) on the real
# Fashion-MNIST at ε = 1, three seeds, each in its own process (the state of one run never
# touches the next), fresh release cache so the release is made and timed. Then one table of
# median seconds per stage and peak RSS beside the authors' code on the same kind of machine
# (../shared/REFERENCE.md). Run on a quiet machine: timings on 2 shared cores mean little.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Each seed runs once in float32 (trainer=default) and once with bf16 matrix products
# (trainer=bf16, conf/trainer/bf16.yaml: for CPUs with AVX512-BF16/AMX), alternating, so a
# drift in the machine's speed hits both rows alike.
RUNS=outputs/pearl_fmnist_speed
rm -rf "$RUNS"
for seed in 0 1 2; do
  for trainer in default bf16; do
    dpsynth dataset=fashion_mnist method=pearl privacy=eps1 eval=fast seed="$seed" logger=none \
      trainer="$trainer" resume=false cache_dir="$RUNS/cache/$trainer" \
      "hydra.run.dir=$RUNS/$trainer/seed$seed" "$@"
  done
done
python experiments/pearl_fmnist/speed_table.py "$RUNS" --out results/pearl_fmnist

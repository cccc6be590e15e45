#!/usr/bin/env bash
# The speed/memory side of the PEARL benchmark: the default preset (method=pearl) on the real
# Fashion-MNIST at ε = 1, three seeds, each in its own process (the state of one run never
# touches the next), fresh release cache so the release is made and timed. Then one table of
# median seconds per stage and peak RSS beside the authors' code on the same kind of machine
# (../shared/REFERENCE.md). Run on a quiet machine: timings on 2 shared cores mean little.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=outputs/pearl_fmnist_speed
rm -rf "$RUNS"
for seed in 0 1 2; do
  dpsynth dataset=fashion_mnist method=pearl privacy=eps1 eval=fast seed="$seed" logger=none \
    resume=false cache_dir="$RUNS/cache" "hydra.run.dir=$RUNS/seed$seed" "$@"
done
python experiments/pearl_fmnist/speed_table.py "$RUNS" --out results/pearl_fmnist

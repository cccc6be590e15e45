#!/usr/bin/env bash
# DP-SGD GAN on real Fashion-MNIST at ε ∈ {10, 1} (the dataset's δ, replace-one neighbours, PLD
# accountant: privacy.neighbours / privacy.accountant override), through the dpsynth CLI, then the
# DP vs non-DP discriminator step cost, then one summary table. Run from anywhere; takes about
# 90 min on 2 quiet CPU cores (see README.md). Re-running finishes only what is missing (the CLI
# skips completed runs and resumes a killed one from its checkpoint and step history).
#
#   experiments/dpsgd_fmnist/run.sh                  # both ε, step cost, summary
#   EPSILONS="10" experiments/dpsgd_fmnist/run.sh    # one ε only
#   THREADS=1 experiments/dpsgd_fmnist/run.sh        # on a busy machine
#   EVAL=eval=default experiments/dpsgd_fmnist/run.sh  # add FID/KID (2k) and real ceilings
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
EPSILONS="${EPSILONS:-10 1}"
EVAL="${EVAL:-eval=classifiers}"  # logreg, MLP, CNN on 60k synthetic; empirical privacy metrics
RUNS=outputs/dpsgd_fmnist
OUT=results/dpsgd_fmnist
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
mkdir -p "$OUT"

for eps in $EPSILONS; do
  echo "== ε = $eps: $(date -Is)"
  dpsynth dataset=fashion_mnist method=dpsgd privacy=eps"$eps" $EVAL seed=0 \
    trainer=cpu logger=csv "hydra.run.dir=$RUNS/eps$eps" "$@"
done

echo "== step cost: $(date -Is)"
python experiments/dpsgd_fmnist/step_cost.py --threads "$THREADS" --steps 30 \
  --out "$OUT/step_cost.json"

python experiments/dpsgd_fmnist/collect.py --runs "$RUNS" --out "$OUT"
for eps in $EPSILONS; do
  cp "$RUNS/eps$eps/samples.png" "$OUT/samples_eps$eps.png" 2>/dev/null || true
  cp "$RUNS/eps$eps/metrics.json" "$OUT/metrics_eps$eps.json" 2>/dev/null || true
done
echo "== done: $(date -Is); see $OUT/summary.md"

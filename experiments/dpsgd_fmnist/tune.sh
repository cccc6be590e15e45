#!/usr/bin/env bash
# How conf/method/dpsgd.yaml's training values were chosen (issue 12's selection protocol):
# dpsynth-tune in proxy mode on public MNIST, never on Fashion-MNIST. The grid — generator EMA
# {0 (off), 0.999} × DP discriminator steps {1,500, 3,000} — is trained at ε = 1 (replace-one,
# PLD, δ 1e-5) on MNIST's training split less a 10% validation part (split seed 0), 10k
# synthetic images, scored by logistic regression on that part; exact argmax (no private data
# read, no budget spent). Writes candidates/, selection.json and preset.yaml under OUT; no final
# runs (the Fashion-MNIST leaderboard, experiments/fmnist_table/run.sh, runs the preset).
# About 75 min on one CPU core (two 1,500-step and two 3,000-step DP-SGD runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-outputs/tune/dpsgd_fmnist_on_mnist}"
dpsynth-tune --out "$OUT" --grid method.g_ema=0,0.999 --grid method.steps=1500,3000 \
  --metric eval/acc_logreg --final-seeds '' \
  --proxy dataset=mnist data_dir="${DPSYNTH_DATA:-../shared/data/mnist}" \
  dataset.n_synthetic=10000 eval=fast \
  -- dataset=fashion_mnist method=dpsgd privacy.epsilon=1 eval=classifiers \
  data_dir=/usr/share/datasets/fashion-mnist
mkdir -p results/dpsgd_fmnist/tuned_on_mnist
cp "$OUT/selection.json" "$OUT/preset.yaml" results/dpsgd_fmnist/tuned_on_mnist/

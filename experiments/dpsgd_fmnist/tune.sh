#!/usr/bin/env bash
# How conf/method/dpsgd.yaml's training values were chosen (issue 12's selection protocol):
# dpsynth-tune in proxy mode on one public dataset for runs on the other. The grid — generator
# EMA {0 (off), 0.999} × DP discriminator steps {1,500, 3,000} — is trained at ε = 1
# (replace-one, PLD, δ 1e-5) on the proxy's training split less a 10% validation part (split
# seed 0), 10k synthetic images, scored by logistic regression on that part; exact argmax (no
# private data read, no budget spent). Writes candidates/, selection.json and preset.yaml under
# OUT; no final runs (the leaderboards' run.sh scripts run the preset).
#   PROXY=mnist (default): the values for Fashion-MNIST runs (results/dpsgd_fmnist/tuned_on_mnist)
#   PROXY=fashion_mnist: the same grid on Fashion-MNIST, for MNIST runs
#     (results/mnist_table/dpsgd_tuned_on_fashion_mnist); the same winner on both makes the
#     preset proxy:mnist|fashion_mnist (dpsynth.config.selection_for).
# Two 1,500-step and two 3,000-step DP-SGD runs: ~30 min on the idle 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROXY="${PROXY:-mnist}"
MNIST_DIR="${DPSYNTH_DATA:-../shared/data/mnist}"
FMNIST_DIR=/usr/share/datasets/fashion-mnist
case "$PROXY" in
  mnist) TARGET=fashion_mnist PROXY_DIR=$MNIST_DIR TARGET_DIR=$FMNIST_DIR
    DEST=results/dpsgd_fmnist/tuned_on_mnist ;;
  fashion_mnist) TARGET=mnist PROXY_DIR=$FMNIST_DIR TARGET_DIR=$MNIST_DIR
    DEST=results/mnist_table/dpsgd_tuned_on_fashion_mnist ;;
  *) echo "PROXY: got '$PROXY'; allowed: mnist, fashion_mnist" >&2; exit 2 ;;
esac
OUT="${OUT:-outputs/tune/dpsgd_${TARGET}_on_${PROXY}}"
dpsynth-tune --out "$OUT" --grid method.g_ema=0,0.999 --grid method.steps=1500,3000 \
  --metric eval/acc_logreg --final-seeds '' \
  --proxy dataset="$PROXY" data_dir="$PROXY_DIR" dataset.n_synthetic=10000 eval=fast \
  -- dataset="$TARGET" method=dpsgd privacy.epsilon=1 eval=classifiers data_dir="$TARGET_DIR"
mkdir -p "$DEST"
cp "$OUT/selection.json" "$OUT/preset.yaml" "$DEST/"

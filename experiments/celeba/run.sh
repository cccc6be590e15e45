#!/usr/bin/env bash
# CelebA 32×32×3 (label: Male), ε 1 and 10, 3 seeds. Needs torchvision's CelebA layout under
# data_dir (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); not on the
# project's machines. A GPU is advisable (trainer=default picks it up).
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/celeba/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,pearl_tuned,dpmerf,dpsgd}"
EPSILONS="${EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-default}"
dpsynth -m study=celeba dataset=celeba method="$METHODS" privacy.epsilon="$EPSILONS" \
  seed="$SEEDS" eval="$EVAL" "$@"
dpsynth-report outputs/multirun/celeba --compare experiments/celeba/published.csv \
  --out results/celeba

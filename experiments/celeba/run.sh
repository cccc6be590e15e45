#!/usr/bin/env bash
# CelebA 32×32×3 (label: Male), ε 1 and 10, 3 seeds. Needs torchvision's CelebA layout under
# data_dir (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); not on the
# project's machines. A GPU is advisable (trainer=default picks it up).
set -euo pipefail
cd "$(dirname "$0")/../.."
dpsynth -m study=celeba dataset=celeba method=pearl,pearl_tuned,dpmerf,dpsgd \
  privacy.epsilon=1,10 seed=0,1,2 eval=default "$@"
dpsynth-report outputs/multirun/celeba --compare experiments/celeba/published.csv --out results/celeba

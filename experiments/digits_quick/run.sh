#!/usr/bin/env bash
# The offline quick study: every method on scikit-learn's bundled 8×8 digits at ε 0.2 / 1 / 10,
# 3 seeds, classifier protocol. No download; minutes on a laptop.
set -euo pipefail
cd "$(dirname "$0")/../.."
dpsynth -m study=digits_quick dataset=digits method=pearl,pearl_tuned,dpmerf,dpsgd \
  privacy.epsilon=0.2,1,10 seed=0,1,2 eval=classifiers "$@"
dpsynth-report outputs/multirun/digits_quick --compare experiments/digits_quick/published.csv \
  --out results/digits_quick

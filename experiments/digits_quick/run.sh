#!/usr/bin/env bash
# The offline quick study: every method on scikit-learn's bundled 8×8 digits at ε 0.2 / 1 / 10,
# 3 seeds, classifier protocol. No download; minutes on a laptop.
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/digits_quick/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,pearl_tuned,dpmerf,dpsgd}"
EPSILONS="${EPSILONS:-0.2,1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-classifiers}"
dpsynth -m study=digits_quick dataset=digits method="$METHODS" privacy.epsilon="$EPSILONS" \
  seed="$SEEDS" eval="$EVAL" "$@"
dpsynth-report outputs/multirun/digits_quick --compare experiments/digits_quick/published.csv \
  --protocol digits-10k-test360 --out results/digits_quick  # experiments/protocols.csv

#!/usr/bin/env bash
# Issue 13's small table: scikit-learn's breast-cancer data (569 rows; 455 train / 114 test by
# the csv loader's seeded 80/20 split), PEARL, its critic-off ablation and DP-MERF at ε 1 / 10,
# δ = 1e-5, 3 seeds. The schema (numeric bounds) is declared public for the target only; the
# rest is estimated under DP from the run's budget (dataset.schema_source=dp, the default).
# Evaluation: the scikit-learn tabular suite trained on 10k synthetic rows, tested on the
# held-out real rows (ROC-AUC from scores), plus 1-/2-way marginal TVD.
# Sweep axes from the environment, e.g. SEEDS=0 bash experiments/small_table/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,dpmerf}"
EPSILONS="${EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
CSV=outputs/small_table/breast_cancer.csv
python experiments/small_table/make_csv.py "$CSV"
COMMON=(study=small_table dataset=csv dataset.path="$PWD/$CSV" dataset.target=target
  'dataset.schema={target: {categories: [benign, malignant]}}' seed="$SEEDS" eval=classifiers
  privacy.epsilon="$EPSILONS")
dpsynth -m "${COMMON[@]}" method="$METHODS" "$@"
# PEARL's critic ablated (issue 13): the same preset with critic: false, on PEARL's own release
# (method.release_of=pearl: a paired ablation, the rows differ by training alone).
dpsynth -m "${COMMON[@]}" method=pearl +method.name=pearl_critic_off method.critic=false \
  method.release_of=pearl "$@"
dpsynth-report outputs/multirun/small_table --protocol sklearn11-small-table --out results/small_table

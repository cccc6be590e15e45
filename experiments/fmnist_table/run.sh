#!/usr/bin/env bash
# Reproduces the Fashion-MNIST rows of the DPDM / SoK-PPDS tables: PEARL (authors' preset and
# ours), DP-MERF and DP-SGD at ε 0.2 / 1 / 10, δ = 1e-5, 3 seeds, the published protocol
# (eval=paper: 60k synthetic images, logistic regression / MLP / CNN, 10k-sample FID).
# Extra arguments go to dpsynth, e.g. `eval=classifiers seed=0` on a CPU-only machine.
# Resumable: re-running finishes only the missing jobs and never re-spends a release.
set -euo pipefail
cd "$(dirname "$0")/../.."
dpsynth -m study=fmnist_table dataset=fashion_mnist \
  method=pearl,pearl_tuned,dpmerf,dpsgd privacy.epsilon=0.2,1,10 seed=0,1,2 eval=paper "$@"
dpsynth-report outputs/multirun/fmnist_table \
  --compare experiments/fmnist_table/published.csv --out results/fmnist_table

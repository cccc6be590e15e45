#!/usr/bin/env bash
# PEARL (authors' preset and ours) beside DP-MERF on the real Fashion-MNIST, ε ∈ {0.2, 1, 10},
# 3 seeds; logistic regression and the LeNet-style CNN trained on 60k synthetic images, tested
# on the real 10k test set. A fresh release cache, so every release is made (and timed) once.
# Writes results/pearl_fmnist/ (leaderboard, curves, index.html, runs). Extra args go to
# dpsynth, e.g. `bash experiments/pearl_fmnist/run.sh seed=0` for one seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
dpsynth -m study=pearl_fmnist dataset=fashion_mnist \
  method=pearl,pearl_tuned,dpmerf privacy.epsilon=0.2,1,10 seed=0,1,2 \
  eval=classifiers 'eval.classifiers=[logreg,cnn]' eval.privacy_metrics.enabled=false \
  cache_dir=outputs/cache/pearl_fmnist "$@"
dpsynth-report outputs/multirun/pearl_fmnist \
  --compare experiments/fmnist_table/published.csv --out results/pearl_fmnist \
  --protocol lenet60k-test-fid10k  # experiments/protocols.csv: the classifiers, no FID

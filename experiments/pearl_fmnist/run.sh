#!/usr/bin/env bash
# PEARL (authors' preset, pearl_tuned and the three-generator pearl_ensemble) beside DP-MERF on the real Fashion-MNIST, ε ∈ {0.2, 1, 10},
# 3 seeds; logistic regression and the LeNet-style CNN trained on 60k synthetic images, tested
# on the real 10k test set; plus PEARL's critic ablated (critic off) on PEARL's own release
# (method.release_of=pearl: a paired ablation). These are the one-shot runs of the
# Fashion-MNIST leaderboard (study fmnist_table, the same folders and configs): running one
# study finishes the other's one-shot jobs, and no release is made twice. Writes
# results/pearl_fmnist/ (leaderboard, curves, index.html).
# Extra args go to dpsynth, e.g. `bash experiments/pearl_fmnist/run.sh seed=0` for one seed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARGS=('eval.classifiers=[logreg,cnn]' eval.privacy_metrics.enabled=false
  cache_dir=outputs/cache/fmnist_table "$@")
EVAL=classifiers DPSGD_EPSILONS='' bash experiments/fmnist_table/run.sh "${ARGS[@]}"
dpsynth -m study=fmnist_table dataset=fashion_mnist method=pearl +method.name=pearl_critic_off \
  method.critic=false method.release_of=pearl privacy.epsilon=0.2,1,10 seed=0,1,2 \
  eval=classifiers "${ARGS[@]}"
RUNS=outputs/multirun/fmnist_table/fashion_mnist
dpsynth-report "$RUNS/pearl" "$RUNS/pearl_tuned" "$RUNS/pearl_ensemble" "$RUNS/dpmerf" \
  --compare experiments/fmnist_table/published.csv --out results/pearl_fmnist \
  --protocol lenet60k-test-fid10k  # experiments/protocols.csv: the classifiers, no FID

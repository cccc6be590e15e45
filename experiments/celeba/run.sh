#!/usr/bin/env bash
# CelebA 32×32×3 (label: Male), ε 1 and 10, 3 seeds, at δ = 1e-6: the dataset's default
# (conf/dataset/celeba.yaml), the δ of the published CelebA comparisons (DPDM, DP-Sinkhorn,
# DPImageBench) and < 1/n = 1/162,770. The usual 1e-5 is ≥ 1/n here and is refused.
#
# Data: torchvision's CelebA layout (img_align_celeba/, list_attr_celeba.txt,
# list_eval_partition.txt) under data_dir (a data_dir=… argument, else $DPSYNTH_DATA, else
# ~/.cache/dpsynth/data). Where no CelebA is found (and no data_dir=… was given), it runs on
# GENERATED files of the real size instead (make_fake_celeba.py, written once to
# $CELEBA_GENERATED_ROOT, default ~/.cache/dpsynth/generated_celeba) and says so loudly: such
# numbers are a smoke test, never results. They go to study celeba_generated_smoke and
# results/celeba/generated_smoke/, apart from the real study (celeba, results/celeba/).
# A GPU is advisable for the full study (trainer=default picks it up).
#
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/celeba/run.sh
# The smoke run of results/celeba/README.md:
#   METHODS=dpmerf EPSILONS=1 SEEDS=0 EVAL=fast bash experiments/celeba/run.sh \
#     method.steps=200 dataset.n_synthetic=10000
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,pearl_tuned,dpmerf,dpsgd}"
EPSILONS="${EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-default}"
# Our evaluation protocol (an id of experiments/protocols.csv), named in the report's header;
# only published rows of the same protocol get a verdict.
case "$EVAL" in
  default) PROTOCOL=lenet60k-test-fid2k ;;
  *) PROTOCOL=lenet60k-test-fid10k ;;  # paper; classifiers/fast: the same classifiers, no FID
esac

DATA_DIR="${DPSYNTH_DATA:-$HOME/.cache/dpsynth/data}"
EXPLICIT=""
ARGS=()
for a in "$@"; do
  case "$a" in
    data_dir=*) DATA_DIR="${a#data_dir=}"; EXPLICIT=1 ;;
    *) ARGS+=("$a") ;;
  esac
done
has_celeba() { [ -f "$1/celeba/list_attr_celeba.txt" ] || [ -f "$1/list_attr_celeba.txt" ]; }
generated() { [ -f "$1/celeba/GENERATED_NOT_CELEBA.txt" ] || [ -f "$1/GENERATED_NOT_CELEBA.txt" ]; }

if has_celeba "$DATA_DIR" && ! generated "$DATA_DIR"; then
  STUDY=celeba
  OUT=results/celeba
  TITLE="celeba (CelebA 32x32, Male, delta 1e-6)"
  COMPARE=(--compare experiments/celeba/published.csv)
  echo "experiments/celeba: real CelebA under $DATA_DIR"
else
  if [ -n "$EXPLICIT" ] && ! has_celeba "$DATA_DIR"; then
    echo "experiments/celeba: error: data_dir=$DATA_DIR holds no CelebA files" \
      "(list_attr_celeba.txt, list_eval_partition.txt, img_align_celeba/ in it or in" \
      "its celeba/); fix the path, or drop data_dir=… to smoke-test on generated files." >&2
    exit 2
  fi
  if ! has_celeba "$DATA_DIR"; then
    DATA_DIR="${CELEBA_GENERATED_ROOT:-$HOME/.cache/dpsynth/generated_celeba}"
    python experiments/celeba/make_fake_celeba.py "$DATA_DIR"
  fi
  STUDY=celeba_generated_smoke
  OUT=results/celeba/generated_smoke
  TITLE="celeba GENERATED-DATA SMOKE TEST (not CelebA; not results)"
  COMPARE=()  # published numbers beside generated-data numbers would invite a comparison
  cat >&2 <<EOF
################################################################################
##  NO REAL CelebA: running on GENERATED images ($DATA_DIR).
##  Every number below is a SMOKE TEST of the pipeline at CelebA's size
##  (n = 162,770, delta = 1e-6), NOT a result. Study: $STUDY, report: $OUT
################################################################################
EOF
fi

dpsynth -m study="$STUDY" dataset=celeba data_dir="$DATA_DIR" method="$METHODS" \
  privacy.epsilon="$EPSILONS" seed="$SEEDS" eval="$EVAL" ${ARGS[@]+"${ARGS[@]}"}
dpsynth-report "outputs/multirun/$STUDY" ${COMPARE[@]+"${COMPARE[@]}"} --out "$OUT" \
  --title "$TITLE" --protocol "$PROTOCOL"
if [ "$STUDY" != celeba ]; then
  cat >"$OUT/GENERATED_DATA_SMOKE_TEST.md" <<EOF
# GENERATED DATA: a smoke test, not results

The runs in this folder trained and evaluated on images written by
experiments/celeba/make_fake_celeba.py ($DATA_DIR), not on CelebA. They show that the
pipeline runs at CelebA's size (162,770 training images) and δ (1e-6); their metrics say
nothing about any method on CelebA and must not be compared with published.csv.
EOF
  echo "experiments/celeba: GENERATED-DATA SMOKE TEST written to $OUT (not results)" >&2
fi

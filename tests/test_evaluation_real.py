"""Evaluation on the real datasets (slow; skipped where the files are not on the machine).

They pin our classifier settings to the published real-data ceilings (REFERENCE.md: logistic
regression 84.4 %, MLP 88.4 % on Fashion-MNIST) and check FID/tabular numbers are sane.
"""

from __future__ import annotations

import numpy as np
import pytest

from dpsynth.data.base import Dataset
from dpsynth.errors import DpsynthError
from dpsynth.evaluation import fid as fidlib
from dpsynth.evaluation.suite import Evaluator

pytestmark = pytest.mark.slow


def _load(name: str) -> Dataset:
    try:
        if name == "fashion_mnist":
            from dpsynth.data.fashion_mnist import load_fashion_mnist

            return load_fashion_mnist("")
        if name == "mnist":
            from dpsynth.data.mnist import load_mnist

            return load_mnist("/work/shared/data/mnist")
        from dpsynth.data.adult import load_adult

        return load_adult("/work/shared/data/adult")
    except (DpsynthError, ImportError, TypeError) as err:
        pytest.skip(f"{name} not available here: {err}")


def test_fashion_mnist_real_ceilings_match_the_published_ones() -> None:
    data = _load("fashion_mnist")
    ev = Evaluator(classifiers=["logreg", "mlp"])
    out = ev(data, data.train_x, data.train_y)  # "synthetic" = the real training set
    assert out["eval/acc_logreg"] == pytest.approx(84.4, abs=0.8)
    assert out["eval/acc_mlp"] == pytest.approx(88.4, abs=1.0)


def test_adult_real_rows_score_high_auc_and_low_tvd() -> None:
    data = _load("adult")
    ev = Evaluator(tabular_classifiers=["logreg", "random_forest"], tvd=True)
    out = ev(data, data.train_x, data.train_y)
    assert out["eval/roc_auc_logreg"] > 0.88 and out["eval/pr_auc_logreg"] > 0.65
    assert out["eval/tvd_1way"] < 0.03 and out["eval/tvd_2way"] < 0.05


def test_inception_fid_separates_datasets() -> None:
    mnist = _load("mnist")
    fashion = _load("fashion_mnist")
    ext = fidlib.load_inception("cpu")
    rng = np.random.default_rng(0)
    pick = lambda x: x[rng.permutation(len(x))[:200]]  # noqa: E731
    a = fidlib.extract_features(pick(mnist.test_x), ext, batch_size=50)
    b = fidlib.extract_features(pick(mnist.train_x), ext, batch_size=50)
    c = fidlib.extract_features(pick(fashion.test_x), ext, batch_size=50)
    same, different = fidlib.fid_from_features(a, b), fidlib.fid_from_features(a, c)
    assert same < 0.3 * different, (same, different)

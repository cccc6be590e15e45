"""Evaluation: classifiers, tabular protocol, marginal TVD, privacy metrics and the suite.

Offline, CPU, tiny generated data. FID/KID and the Inception extractor are in
test_evaluation_fid.py.
"""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.svm import LinearSVC
from torch import Tensor, nn

from dpsynth.data.base import Column, Dataset, DataSpec
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluation.classifiers import (
    IMAGE_CLASSIFIERS,
    cnn_accuracy,
    get_image_classifier,
    logreg_accuracy,
    mlp_accuracy,
)
from dpsynth.evaluation.privacy_metrics import dcr, mia_auc, nearest_distance
from dpsynth.evaluation.suite import Evaluator
from dpsynth.evaluation.tabular import (
    TABULAR_CLASSIFIERS,
    classifier_scores,
    marginal_tvd,
    tabular_utility,
)

EVAL_CONF = Path(__file__).resolve().parents[1] / "conf" / "eval"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP sync overhead, which dominates on a busy box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Tiny data
# ----------------------------------------------------------------------------------------------


def separable_images(n: int, num_classes: int, shape=(1, 8, 8), seed: int = 0):
    """Class c lights up its own horizontal band: trivially separable, plus noise."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    y = rng.integers(0, num_classes, n)
    x = rng.uniform(0, 0.2, (n, c, h, w)).astype(np.float32)
    band = max(h // num_classes, 1)
    for k in range(num_classes):
        rows = slice((k * band) % h, (k * band) % h + band)
        x[y == k, :, rows, :] += 0.7
    return np.clip(x, 0, 1), y.astype(np.int64)


def image_dataset(n_train=300, n_test=200, num_classes=4, shape=(1, 8, 8)) -> Dataset:
    spec = DataSpec(
        name="tinyimg",
        kind="image",
        shape=shape,
        num_classes=num_classes,
        class_names=tuple(str(i) for i in range(num_classes)),
        balanced=True,
    )
    tx, ty = separable_images(n_train, num_classes, shape, seed=1)
    vx, vy = separable_images(n_test, num_classes, shape, seed=2)
    return Dataset(spec, tx, ty, vx, vy)


COLUMNS = (
    Column("age", "numeric", low=17, high=90),
    Column("sex", "categorical", ("F", "M")),
    Column("edu", "categorical", ("a", "b", "c")),
)


def encode_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Encoded rows for COLUMNS and a binary label that depends on them."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(-1, 1, n)
    sex = rng.integers(0, 2, n)
    edu = rng.integers(0, 3, n)
    x = np.concatenate([age[:, None], np.eye(2)[sex], np.eye(3)[edu]], axis=1).astype(np.float32)
    logit = 2.5 * age + 1.5 * (edu == 2) - 1.0 * sex + rng.normal(0, 0.7, n)
    return x, (logit > 0).astype(np.int64)


def tabular_dataset(n_train=300, n_test=200) -> Dataset:
    spec = DataSpec(
        name="tinytab",
        kind="tabular",
        shape=(6,),
        num_classes=2,
        class_names=("<=50K", ">50K"),
        columns=COLUMNS,
        target="income",
    )
    tx, ty = encode_rows(n_train, 1)
    vx, vy = encode_rows(n_test, 2)
    return Dataset(spec, tx, ty, vx, vy)


class TinyExtractor(nn.Module):
    """Stand-in for Inception: a fixed random projection of the flattened image."""

    num_features = 8

    def __init__(self, dim: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(dim, self.num_features, generator=gen))

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).float() @ self.proj  # (N, 8)


# ----------------------------------------------------------------------------------------------
# Image classifiers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGE_CLASSIFIERS))
def test_image_classifiers_beat_chance_on_separable_images(name: str) -> None:
    data = image_dataset()
    params = {"min_steps": 150} if name == "cnn" else {}
    acc = get_image_classifier(name, seed=0, **params)(
        data.train_x, data.train_y, data.test_x, data.test_y
    )
    assert 90.0 <= acc <= 100.0  # percent; chance is 25


def test_cnn_is_generic_over_shapes_deterministic_and_leaves_global_rng_alone() -> None:
    x, y = separable_images(120, 3, shape=(3, 32, 32))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = cnn_accuracy(x, y, x, y, seed=7, epochs=1, min_steps=0, num_classes=3)
    after = torch.rand(1)
    b = cnn_accuracy(x, y, x, y, seed=7, epochs=1, min_steps=0, num_classes=3)
    assert a == b
    assert torch.equal(before, after)


def test_single_class_synthetic_set_predicts_that_class() -> None:
    data = image_dataset()
    y0 = np.zeros_like(data.train_y)
    expected = 100.0 * np.mean(data.test_y == 0)
    assert logreg_accuracy(data.train_x, y0, data.test_x, data.test_y) == pytest.approx(expected)
    assert mlp_accuracy(data.train_x, y0, data.test_x, data.test_y) == pytest.approx(expected)


def test_unknown_classifier_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="logreg, mlp, cnn"):
        get_image_classifier("svm")
    with pytest.raises(ConfigError, match="random_forest"):
        Evaluator(tabular_classifiers=["xgboost"])
    with pytest.raises(ConfigError, match="valid: logreg, mlp, cnn"):
        Evaluator(classifiers=["resnet"])


# ----------------------------------------------------------------------------------------------
# Tabular protocol
# ----------------------------------------------------------------------------------------------


def test_roc_and_pr_come_from_scores_and_match_sklearn() -> None:
    data = tabular_dataset()
    args = (data.train_x, data.train_y, data.test_x, data.test_y)
    got = classifier_scores("logreg", *args, num_classes=2, seed=0)
    ref = LogisticRegression(max_iter=1000, random_state=0).fit(data.train_x, data.train_y)
    proba = ref.predict_proba(data.test_x)[:, 1]
    assert got["roc_auc"] == pytest.approx(roc_auc_score(data.test_y, proba), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(average_precision_score(data.test_y, proba), abs=1e-12)
    hard = roc_auc_score(data.test_y, ref.predict(data.test_x))
    assert got["roc_auc"] != pytest.approx(hard)  # scores, never hard labels

    svm = classifier_scores("linear_svm", *args, num_classes=2, seed=0)
    margin = LinearSVC(max_iter=5000, random_state=0).fit(data.train_x, data.train_y)
    margin_scores = margin.decision_function(data.test_x)
    assert svm["roc_auc"] == pytest.approx(roc_auc_score(data.test_y, margin_scores), abs=1e-12)


def test_full_tabular_suite_runs_and_averages() -> None:
    data = tabular_dataset()
    out = tabular_utility(
        data.train_x,
        data.train_y,
        data.test_x,
        data.test_y,
        classifiers=list(TABULAR_CLASSIFIERS),
        num_classes=2,
    )
    per = [out[f"roc_auc_{n}"] for n in TABULAR_CLASSIFIERS]
    assert out["roc_auc"] == pytest.approx(np.mean(per))
    assert all(0.5 < v <= 1.0 for v in per), out
    assert out["single_class"] == 0.0


def test_single_class_tabular_synthetic_gives_chance_auc_and_flag() -> None:
    data = tabular_dataset()
    y0 = np.zeros_like(data.train_y)
    out = tabular_utility(
        data.train_x, y0, data.test_x, data.test_y, classifiers=["logreg", "lda"], num_classes=2
    )
    assert out["roc_auc"] == 0.5 and out["single_class"] == 1.0
    assert out["pr_auc"] == pytest.approx(np.mean(data.test_y))


def test_multiclass_tabular_reports_macro_f1() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = np.argmax(x[:, :3], axis=1)
    out = classifier_scores("logreg", x, y, x, y, num_classes=3)
    assert out["f1"] > 0.9 and "roc_auc" not in out


def test_marginal_tvd_is_zero_on_identical_and_one_on_disjoint_tables() -> None:
    x, _ = encode_rows(200, 0)
    assert marginal_tvd(x, x.copy(), COLUMNS) == (0.0, 0.0)
    a = np.tile(np.array([[-0.99, 1, 0, 1, 0, 0]], np.float32), (50, 1))
    b = np.tile(np.array([[0.99, 0, 1, 0, 0, 1]], np.float32), (70, 1))
    assert marginal_tvd(a, b, COLUMNS) == (1.0, 1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.integers(1, 60))
def test_marginal_tvd_is_a_symmetric_distance_in_unit_interval(seed: int, n: int, m: int) -> None:
    a, _ = encode_rows(n, seed)
    b, _ = encode_rows(m, seed + 1)
    one, two = marginal_tvd(a, b, COLUMNS)
    assert 0.0 <= one <= 1.0 and 0.0 <= two <= 1.0
    assert (one, two) == pytest.approx(marginal_tvd(b, a, COLUMNS))


def test_marginal_tvd_rejects_a_table_of_the_wrong_width() -> None:
    with pytest.raises(DataError, match="6 encoded dimensions"):
        marginal_tvd(np.zeros((3, 5)), np.zeros((3, 5)), COLUMNS)


# ----------------------------------------------------------------------------------------------
# Privacy metrics
# ----------------------------------------------------------------------------------------------


def _gaussian(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 10)).astype(np.float32)


def test_nearest_distance_matches_brute_force() -> None:
    q, r = torch.randn(50, 4), torch.randn(70, 4)
    brute = ((q[:, None] - r[None]) ** 2).sum(-1).sqrt().min(1).values
    assert torch.allclose(nearest_distance(q, r, chunk=7), brute, atol=1e-5)


def test_dcr_ratio_near_one_for_independent_samples_and_near_zero_for_copies() -> None:
    train, test, fresh = _gaussian(2000, 1), _gaussian(1000, 2), _gaussian(1000, 3)
    independent = dcr(fresh, train, test, n=1000)
    assert 0.9 < independent["dcr_ratio"] < 1.1
    copied = dcr(train, train, test, n=1000)  # subsampled queries still find their originals
    assert copied["dcr_ratio"] < 0.05


def test_mia_auc_is_chance_for_independent_samples_and_high_for_copies() -> None:
    train, test, fresh = _gaussian(2000, 1), _gaussian(1000, 2), _gaussian(2000, 3)
    assert 0.44 < mia_auc(fresh, train, test, n=1000) < 0.56
    assert mia_auc(train, train, test, n=1000) > 0.95


# ----------------------------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("yaml", sorted(p.name for p in EVAL_CONF.glob("*.yaml")))
@pytest.mark.parametrize("kind", ["image", "tabular"])
def test_each_eval_yaml_instantiates_and_runs_on_tiny_data(
    yaml: str, kind: str, tmp_path: Path
) -> None:
    cfg = OmegaConf.load(EVAL_CONF / yaml)
    data = image_dataset() if kind == "image" else tabular_dataset()
    ev = hydra.utils.instantiate(
        cfg,
        classifier_params={"cnn": {"epochs": 1, "min_steps": 10}},
        feature_extractor=TinyExtractor(data.spec.dim),
        _convert_="all",
    )
    assert isinstance(ev, Evaluator)
    rng = np.random.default_rng(5)
    perm = rng.permutation(len(data.train_x))  # "synthetic" = shuffled real rows (fast to score)
    out = ev(data, data.train_x[perm], data.train_y[perm], cache_dir=str(tmp_path))
    assert out and all(k.startswith("eval/") and np.isfinite(v) for k, v in out.items()), out
    for key in out:
        Evaluator.higher_is_better(key)  # every emitted key has a direction
    assert ev.timings and all(t >= 0 for t in ev.timings.values())
    if kind == "image":
        assert {f"eval/acc_{c}" for c in cfg.classifiers} <= set(out)
        assert ("eval/fid" in out) == cfg.fid.enabled
        assert bool(list(tmp_path.glob("fidref-tinyimg-*.npz"))) == cfg.fid.enabled  # cached
        assert ("eval/real_acc_logreg" in out) == cfg.real_ceiling
    else:
        assert {f"eval/roc_auc_{c}" for c in cfg.tabular_classifiers} <= set(out)
        assert {"eval/roc_auc", "eval/pr_auc"} <= set(out)
        assert "eval/fid" not in out  # FID is skipped on tabular data
        assert ("eval/tvd_1way" in out) == cfg.tvd
    assert ("eval/dcr_ratio" in out) == cfg.privacy_metrics.enabled


@pytest.mark.parametrize("kind", ["image", "tabular"])
def test_evaluator_never_reads_the_private_train_split_without_ceiling_or_privacy(
    kind: str,
) -> None:
    data = image_dataset() if kind == "image" else tabular_dataset()
    sx, sy = data.train_x, data.train_y
    data.train_x = data.train_y = None  # any read would fail
    ev = Evaluator(
        classifiers=["logreg"],
        fid={"enabled": True, "n_samples": 100},
        kid={"enabled": True, "subsets": 3, "subset_size": 50},
        tvd=True,
        feature_extractor=TinyExtractor(data.spec.dim),
    )
    out = ev(data, sx, sy)
    assert out


def test_evaluator_rejects_malformed_synthetic_data() -> None:
    data = image_dataset()
    ev = Evaluator()
    bad = data.train_x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ev(data, bad, data.train_y)
    with pytest.raises(DataError, match="labels span"):
        ev(data, data.train_x, data.train_y + 10)
    with pytest.raises(DataError, match="expected"):
        ev(data, data.train_x[:, :, :4], data.train_y)
    flat = ev(data, data.train_x.reshape(len(data.train_x), -1), data.train_y)
    assert flat == ev(data, data.train_x, data.train_y)  # flattened rows are accepted


def test_higher_is_better_directions() -> None:
    hib = Evaluator.higher_is_better
    assert hib("eval/acc_cnn") and hib("eval/real_acc_logreg") and hib("eval/roc_auc_lda")
    assert hib("eval/pr_auc") and hib("eval/f1") and hib("eval/dcr_ratio")
    assert not hib("eval/fid") and not hib("eval/kid") and not hib("eval/tvd_2way")
    assert not hib("eval/mia_auc")
    with pytest.raises(ConfigError, match="unknown metric key"):
        hib("eval/bogus")


def test_bad_eval_sections_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="eval.fid"):
        Evaluator(fid={"enabled": True, "n_sample": 10})
    with pytest.raises(ConfigError, match="variant"):
        Evaluator(fid={"enabled": True, "variant": "turbo"})

"""Tabular protocol: downstream scikit-learn suite and marginal fidelity.

Utility follows DP-MERF's tabular evaluation (Harder et al., AISTATS 2021): a suite of
scikit-learn classifiers trained on synthetic rows and tested on real held-out rows. For a
binary target we report ROC-AUC and PR-AUC (average precision) computed from predicted
probabilities or decision scores; the authors' code passed hard labels to the AUC functions,
which turns the curve into a single point, and we do not copy that. For more classes: macro F1
and accuracy.

Fidelity: total variation distance of all 1-way, 2-way and 3-way marginals, on the decoded
table (one-hot blocks -> category index, numeric columns -> fixed public bins).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import (
    AdaBoostClassifier,
    BaggingClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.naive_bayes import BernoulliNB, GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from dpsynth.data.base import Column
from dpsynth.errors import ConfigError, DataError

# Each factory takes the seed. Settings follow DP-MERF's suite; the few changes are for run time
# on Adult-sized data (~32k rows x ~100 encoded columns) on 2 cores and are noted inline.
TABULAR_CLASSIFIERS: dict[str, Callable[[int], ClassifierMixin]] = {
    "logreg": lambda s: LogisticRegression(max_iter=1000, random_state=s),
    "gaussian_nb": lambda s: GaussianNB(),
    "bernoulli_nb": lambda s: BernoulliNB(binarize=0.0),  # numeric columns live in [-1, 1]
    "linear_svm": lambda s: LinearSVC(max_iter=5000, random_state=s),  # scores: decision_function
    "decision_tree": lambda s: DecisionTreeClassifier(class_weight="balanced", random_state=s),
    "lda": lambda s: LinearDiscriminantAnalysis(),
    "adaboost": lambda s: AdaBoostClassifier(n_estimators=100, random_state=s),
    "bagging": lambda s: BaggingClassifier(n_estimators=20, max_samples=0.1, random_state=s),
    "random_forest": lambda s: RandomForestClassifier(
        n_estimators=100, class_weight="balanced", random_state=s
    ),
    # subsample=0.5 (DP-MERF used 0.1 for images): stochastic boosting, half the time.
    "gradient_boosting": lambda s: GradientBoostingClassifier(
        n_estimators=50, subsample=0.5, random_state=s
    ),
    "mlp": lambda s: MLPClassifier(max_iter=100, early_stopping=True, random_state=s),
}


def get_tabular_classifier(name: str, seed: int) -> ClassifierMixin:
    """A fresh, seeded classifier by config name.

    Raises:
        ConfigError: unknown name.
    """
    if name not in TABULAR_CLASSIFIERS:
        raise ConfigError(
            f"eval.tabular_classifiers: unknown classifier '{name}'; valid: "
            f"{', '.join(TABULAR_CLASSIFIERS)}. Fix the list in conf/eval/<name>.yaml or on the "
            "command line."
        )
    return TABULAR_CLASSIFIERS[name](seed)


def positive_scores(model: ClassifierMixin, x: np.ndarray) -> np.ndarray:
    """Score of the positive class (label 1) for each row: probability, else decision value.

    Probabilities are looked up through ``model.classes_`` so a model that saw only some labels
    still scores the right column.
    """
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)  # (N, n_classes_seen)
        cols = list(model.classes_)
        return proba[:, cols.index(1)] if 1 in cols else np.zeros(len(x))
    return np.asarray(model.decision_function(x), dtype=np.float64)  # (N,) signed margin


def binary_auc(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(ROC-AUC, PR-AUC) of real labels against scores; PR-AUC is average precision."""
    return float(roc_auc_score(y_true, scores)), float(average_precision_score(y_true, scores))


def _fit_quietly(model: ClassifierMixin, x: np.ndarray, y: np.ndarray) -> ClassifierMixin:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. LDA's collinearity note
        return model.fit(x, y)


def classifier_scores(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    seed: int = 0,
) -> dict[str, float]:
    """Train one classifier on (train_x, train_y), score it on the real test rows.

    Returns (without the ``eval/`` prefix): binary: ``roc_auc``, ``pr_auc``, ``acc``;
    multi-class: ``f1`` (macro, in [0, 1]) and ``acc``. Accuracy is in percent. A training set
    with a single label cannot be fitted: it predicts that label with a constant score (ROC-AUC
    0.5, PR-AUC = the positive rate) and sets ``single_class`` to 1.
    """
    test_y = np.asarray(test_y)
    labels = np.unique(train_y)
    out: dict[str, float] = {"single_class": float(len(labels) < 2)}
    if len(labels) < 2:
        pred = np.full(len(test_y), labels[0] if len(labels) else 0)
        scores = np.full(len(test_y), 0.5)
    else:
        model = _fit_quietly(get_tabular_classifier(name, seed), train_x, train_y)
        pred = model.predict(test_x)
        scores = positive_scores(model, test_x) if num_classes == 2 else None
    out["acc"] = float(100.0 * accuracy_score(test_y, pred))
    if num_classes == 2:
        out["roc_auc"], out["pr_auc"] = binary_auc(test_y, scores)
    else:
        out["f1"] = float(f1_score(test_y, pred, average="macro", labels=np.arange(num_classes)))
    return out


def tabular_utility(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    classifiers: Sequence[str],
    num_classes: int,
    seed: int = 0,
    prefix: str = "",
) -> dict[str, float]:
    """Run the suite; per-classifier keys ``<prefix><metric>_<clf>`` and their means.

    Example keys with ``prefix="real_"``: ``real_roc_auc_logreg``, ``real_roc_auc``.
    ``single_class`` is reported once (it does not depend on the classifier).
    """
    for name in classifiers:  # fail on a typo before any fitting
        get_tabular_classifier(name, seed)
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    single = 0.0
    for name in classifiers:
        scores = classifier_scores(
            name, train_x, train_y, test_x, test_y, num_classes=num_classes, seed=seed
        )
        single = scores.pop("single_class")
        for metric, value in scores.items():
            out[f"{prefix}{metric}_{name}"] = value
            per_metric.setdefault(metric, []).append(value)
    for metric, values in per_metric.items():
        out[f"{prefix}{metric}"] = float(np.mean(values))
    if classifiers:
        out[f"{prefix}single_class"] = single
    return out


# ----------------------------------------------------------------------------------------------
# Marginal fidelity
# ----------------------------------------------------------------------------------------------


def decode_codes(table: np.ndarray, columns: Sequence[Column], n_bins: int = 10) -> np.ndarray:
    """Encoded rows -> (N, n_columns) integer codes, one per original column.

    Categorical one-hot blocks decode by argmax (generators emit soft blocks). Numeric columns
    are encoded in [-1, 1] over their public bounds; they fall into ``n_bins`` equal bins over
    that range (values outside are clipped into the end bins).

    Raises:
        DataError: the table width does not match the column layout.
    """
    table = np.asarray(table, dtype=np.float64)
    width = sum(c.width for c in columns)
    if table.ndim != 2 or table.shape[1] != width:
        raise DataError(
            f"marginal TVD: table has shape {table.shape}, but spec.columns describe {width} "
            "encoded dimensions; pass rows encoded with the dataset's own encoder."
        )
    codes = np.empty((table.shape[0], len(columns)), dtype=np.int64)
    start = 0
    for j, col in enumerate(columns):
        block = table[:, start : start + col.width]
        if col.kind == "categorical":
            codes[:, j] = block.argmax(axis=1)
        else:
            scaled = (block[:, 0] + 1.0) / 2.0 * n_bins  # [-1, 1] -> [0, n_bins]
            codes[:, j] = np.clip(np.floor(np.nan_to_num(scaled)), 0, n_bins - 1)
        start += col.width
    return codes


def _levels(col: Column, n_bins: int) -> int:
    return col.width if col.kind == "categorical" else n_bins


def _tvd(a: np.ndarray, b: np.ndarray, size: int) -> float:
    p = np.bincount(a, minlength=size) / max(len(a), 1)
    q = np.bincount(b, minlength=size) / max(len(b), 1)
    return float(0.5 * np.abs(p - q).sum())


def marginal_tvd(
    syn_table: np.ndarray,
    real_table: np.ndarray,
    columns: Sequence[Column],
    *,
    n_bins: int = 10,
) -> tuple[float, float]:
    """Mean total variation distance over all 1-way and all 2-way marginals.

    TVD(p, q) = 1/2 sum |p - q| lies in [0, 1]: 0 for identical tables, 1 for tables with no
    value in common. Bins are public (fixed from the encoded range), never fitted to data.

    Args:
        syn_table: (N, D) encoded synthetic rows.
        real_table: (M, D) encoded real rows.
        columns: the encoded layout (``spec.columns``), D = sum of widths.
        n_bins: bins per numeric column.

    Returns:
        (mean 1-way TVD, mean 2-way TVD); the 2-way mean is 0 for a single column.
    """
    s = decode_codes(syn_table, columns, n_bins)
    r = decode_codes(real_table, columns, n_bins)
    k = [_levels(c, n_bins) for c in columns]
    one = [_tvd(s[:, j], r[:, j], k[j]) for j in range(len(columns))]
    two = [
        _tvd(s[:, i] * k[j] + s[:, j], r[:, i] * k[j] + r[:, j], k[i] * k[j])
        for i, j in itertools.combinations(range(len(columns)), 2)
    ]
    return float(np.mean(one)) if one else 0.0, float(np.mean(two)) if two else 0.0


def kway_tvd(
    syn_table: np.ndarray,
    real_table: np.ndarray,
    columns: Sequence[Column],
    k: int,
    *,
    n_bins: int = 10,
) -> float:
    """Mean total variation distance over all k-way marginals (e.g. k = 3: every triple of
    columns), binned as in :func:`marginal_tvd`; 0 when there are fewer than k columns."""
    s = decode_codes(syn_table, columns, n_bins)
    r = decode_codes(real_table, columns, n_bins)
    levels = [_levels(c, n_bins) for c in columns]
    out = []
    for idx in itertools.combinations(range(len(columns)), k):
        shape = [levels[j] for j in idx]
        size = int(np.prod(shape))
        a = np.ravel_multi_index([s[:, j] for j in idx], shape)
        b = np.ravel_multi_index([r[:, j] for j in idx], shape)
        out.append(_tvd(a, b, size))
    return float(np.mean(out)) if out else 0.0


def with_label_column(
    x: np.ndarray, y: np.ndarray, columns: Sequence[Column], target: str, class_names: Sequence[str]
) -> tuple[np.ndarray, tuple[Column, ...]]:
    """Append the label as a one-hot categorical column, so TVD also covers (feature, label)."""
    onehot = np.eye(len(class_names), dtype=np.float32)[np.asarray(y, dtype=np.int64)]
    col = Column(name=target or "label", kind="categorical", categories=tuple(class_names))
    return np.concatenate([np.asarray(x, np.float32), onehot], axis=1), (*columns, col)

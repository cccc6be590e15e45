"""The evaluation suite: one object, configured by ``conf/eval/*.yaml``, that scores a release.

``Evaluator`` dispatches on ``data.spec.kind``:

* image: downstream accuracy (``eval/acc_<clf>``, trained on synthetic, tested on real test),
  optional ceiling (``eval/real_acc_<clf>``, trained on the real train split), FID and KID
  against the real test split (``eval/fid``, ``eval/kid``, ``eval/kid_std``);
* tabular: the scikit-learn suite (binary: ``eval/roc_auc[_<clf>]``, ``eval/pr_auc[_<clf>]``;
  multi-class: ``eval/f1[_<clf>]``; both: ``eval/acc[_<clf>]``), its ``real_`` ceiling, and
  marginal fidelity (``eval/tvd_1way``, ``eval/tvd_2way``, ``eval/tvd_3way``);
* both: empirical privacy (``eval/dcr_ratio``, ``eval/mia_auc``, ...).

The real training split is read only for the ceiling and the privacy metrics; every other
metric compares the synthetic set with the real *test* split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from torch import nn

from dpsynth.data.base import Dataset
from dpsynth.errors import ConfigError, DataError
from dpsynth.evaluation import fid as fidlib
from dpsynth.evaluation.classifiers import IMAGE_CLASSIFIERS, get_image_classifier
from dpsynth.evaluation.privacy_metrics import privacy_metrics
from dpsynth.evaluation.tabular import (
    TABULAR_CLASSIFIERS,
    kway_tvd,
    marginal_tvd,
    tabular_utility,
    with_label_column,
)

log = logging.getLogger(__name__)


@dataclass
class FIDConfig:
    """``eval.fid``: Inception features of ``n_samples`` synthetic vs real test images."""

    enabled: bool = False
    n_samples: int = 2000
    batch_size: int = 32
    variant: str = "fast"


@dataclass
class KIDConfig:
    """``eval.kid``: KID on the same features as FID (extracted once)."""

    enabled: bool = False
    subsets: int = 100
    subset_size: int = 1000


@dataclass
class PrivacyConfig:
    """``eval.privacy_metrics``: DCR ratio and MIA AUC with ``n`` queries."""

    enabled: bool = False
    n: int = 2000


def _section(cls: type, key: str, value: Mapping[str, Any] | bool | None) -> Any:
    """Build a config dataclass from a YAML mapping (or a bare bool for ``enabled``)."""
    if value is None:
        return cls()
    if isinstance(value, bool):
        return cls(enabled=value)
    allowed = {f.name for f in fields(cls)}
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(
            f"eval.{key}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}."
        )
    return cls(**dict(value))


def _check_names(key: str, names: Sequence[str], valid: Mapping[str, object]) -> list[str]:
    names = list(names or [])
    bad = [n for n in names if n not in valid]
    if bad:
        raise ConfigError(
            f"eval.{key}: unknown classifier(s) {bad}; valid: {', '.join(valid)}. "
            f"Fix the list in conf/eval/<name>.yaml or override eval.{key}=[...]."
        )
    return names


class Evaluator:
    """Scores a synthetic set against the real data; one instance per eval config.

    Args:
        classifiers: image classifiers (``logreg``, ``mlp``, ``cnn``).
        classifier_params: per-classifier keyword overrides, e.g. ``{cnn: {epochs: 10}}``.
        real_ceiling: also train each classifier on the real train split.
        fid: ``{enabled, n_samples, batch_size, variant}`` (image data only).
        kid: ``{enabled, subsets, subset_size}``; uses the FID features.
        tabular_classifiers: scikit-learn suite for tabular data (see ``TABULAR_CLASSIFIERS``).
        tvd: report 1-way/2-way marginal TVD (tabular data only).
        tvd_bins: public bins per numeric column for TVD.
        privacy_metrics: ``{enabled, n}``: DCR ratio and membership-inference AUC.
        seed: seeds classifiers and every subsample.
        cache_dir: where FID reference statistics are cached (None: the caller passes one).
        device: torch device for the CNN and Inception (None: CUDA when available).
        feature_extractor: replaces Inception (tests inject a tiny one).
    """

    def __init__(
        self,
        classifiers: Sequence[str] = ("logreg",),
        classifier_params: Mapping[str, Mapping[str, Any]] | None = None,
        real_ceiling: bool = False,
        fid: Mapping[str, Any] | bool | None = None,
        kid: Mapping[str, Any] | bool | None = None,
        tabular_classifiers: Sequence[str] = ("logreg",),
        tvd: bool = False,
        tvd_bins: int = 10,
        privacy_metrics: Mapping[str, Any] | bool | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        device: str | None = None,
        feature_extractor: nn.Module | None = None,
    ) -> None:
        self.classifiers = _check_names("classifiers", classifiers, IMAGE_CLASSIFIERS)
        self.classifier_params = {k: dict(v) for k, v in (classifier_params or {}).items()}
        _check_names("classifier_params", list(self.classifier_params), IMAGE_CLASSIFIERS)
        self.tabular_classifiers = _check_names(
            "tabular_classifiers", tabular_classifiers, TABULAR_CLASSIFIERS
        )
        self.real_ceiling = bool(real_ceiling)
        self.fid = _section(FIDConfig, "fid", fid)
        self.kid = _section(KIDConfig, "kid", kid)
        if self.fid.variant not in fidlib.VARIANTS:
            raise ConfigError(
                f"eval.fid.variant: got '{self.fid.variant}', allowed: {fidlib.VARIANTS}."
            )
        if self.fid.n_samples < 2 or self.fid.batch_size < 1:
            raise ConfigError(
                f"eval.fid: n_samples must be >= 2 and batch_size >= 1, got "
                f"{self.fid.n_samples} and {self.fid.batch_size}."
            )
        self.tvd = bool(tvd)
        if tvd_bins < 1:
            raise ConfigError(f"eval.tvd_bins: got {tvd_bins}, must be a positive integer.")
        self.tvd_bins = int(tvd_bins)
        self.privacy = _section(PrivacyConfig, "privacy_metrics", privacy_metrics)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.device = device
        self._extractor = feature_extractor
        self.timings: dict[str, float] = {}

    @property
    def reads_train(self) -> bool:
        """Whether evaluation reads the private training split (real-data ceilings, DCR and
        membership inference); when not, the pipeline drops it right after a one-shot release."""
        return self.real_ceiling or self.privacy.enabled

    # ------------------------------------------------------------------------------------------

    def __call__(
        self,
        data: Dataset,
        synthetic_x: np.ndarray,
        synthetic_y: np.ndarray,
        *,
        cache_dir: str | None = None,
    ) -> dict[str, float]:
        """Evaluate a synthetic set; returns ``eval/*`` metrics (see module docstring).

        Args:
            data: the loaded dataset (spec, private train split, real test split).
            synthetic_x: (N, *spec.shape) synthetic records (flattened rows accepted).
            synthetic_y: (N,) integer labels in ``[0, num_classes)``.
            cache_dir: FID reference cache folder; overrides the configured one.

        Raises:
            DataError: malformed synthetic data (wrong shape, NaN/inf, labels out of range).
        """
        sx, sy = self._validate(data, synthetic_x, synthetic_y)
        self.timings = {}
        if data.spec.kind == "image":
            out = self._image(data, sx, sy, cache_dir or self.cache_dir)
        else:
            out = self._tabular(data, sx, sy)
        if self.privacy.enabled:
            with self._timed("privacy"):
                out.update(
                    privacy_metrics(sx, data.train_x, data.test_x, n=self.privacy.n, seed=self.seed)
                )
        return {f"eval/{k}": float(v) for k, v in sorted(out.items())}

    @staticmethod
    def reads_private(key: str) -> bool:
        """Whether a metric is computed from the private training split (a real-data ceiling,
        distances to the training records, a membership attack): its number is no DP release,
        so records list it under ``not_dp_metrics`` and reports mark it "not DP"."""
        name = key.removeprefix("eval/")
        return name.startswith(("real_", "dcr", "mia_auc"))

    @staticmethod
    def higher_is_better(key: str) -> bool:
        """Direction of a metric key (with or without ``eval/``), for sweeps and tables.

        Raises:
            ConfigError: unknown key.
        """
        name = key.removeprefix("eval/").removeprefix("real_")
        if name.startswith(("fid", "kid", "tvd", "mia_auc", "single_class")):
            return False  # distances, discrepancies, attack success, degenerate output
        if name.startswith(("acc", "roc_auc", "pr_auc", "f1", "dcr")):
            # utility; DCR: farther from the training records is more private — a privacy
            # diagnostic, not a score (poor fidelity also raises it): reports give it no verdict
            return True
        raise ConfigError(
            f"unknown metric key '{key}'; known families: eval/acc*, eval/roc_auc*, "
            "eval/pr_auc*, eval/f1*, eval/dcr*, eval/fid, eval/kid*, eval/tvd_*, eval/mia_auc "
            "(and their eval/real_* ceilings)."
        )

    # ------------------------------------------------------------------------------------------

    @contextmanager
    def _timed(self, group: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[group] = self.timings.get(group, 0.0) + time.perf_counter() - start
            log.info("eval %s: %.1f s", group, self.timings[group])

    @staticmethod
    def _validate(
        data: Dataset, synthetic_x: np.ndarray, synthetic_y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = data.spec
        x = np.asarray(synthetic_x, dtype=np.float32)
        y = np.asarray(synthetic_y)
        if x.ndim < 2 or x.shape[0] == 0 or int(np.prod(x.shape[1:])) != spec.dim:
            raise DataError(
                f"synthetic_x: got shape {x.shape}, expected (N, {', '.join(map(str, spec.shape))})"
                f" for dataset '{spec.name}'; the method's sample() must return that layout."
            )
        x = x.reshape(x.shape[0], *spec.shape)
        if not np.isfinite(x).all():
            raise DataError(
                f"synthetic_x contains {int((~np.isfinite(x)).sum())} NaN/inf values; the "
                "generator diverged: lower the learning rate or check the training loss."
            )
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"synthetic_y: got shape {y.shape} dtype {y.dtype}, expected ({x.shape[0]},) "
                "integers, one label per synthetic record."
            )
        if y.size and (y.min() < 0 or y.max() >= spec.num_classes):
            raise DataError(
                f"synthetic_y: labels span [{y.min()}, {y.max()}], allowed "
                f"0..{spec.num_classes - 1} for dataset '{spec.name}'."
            )
        return x, y.astype(np.int64)

    def _image(
        self, data: Dataset, sx: np.ndarray, sy: np.ndarray, cache_dir: str | None
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.classifiers:
            params = {"seed": self.seed, **self.classifier_params.get(name, {})}
            if name == "cnn":
                params.setdefault("num_classes", data.spec.num_classes)
                params.setdefault("device", self.device)
            clf = get_image_classifier(name, **params)
            with self._timed(f"acc_{name}"):
                out[f"acc_{name}"] = clf(sx, sy, data.test_x, data.test_y)
            if self.real_ceiling:
                with self._timed(f"real_acc_{name}"):
                    out[f"real_acc_{name}"] = clf(
                        data.train_x, data.train_y, data.test_x, data.test_y
                    )
        if self.fid.enabled or self.kid.enabled:
            with self._timed("fid"):
                out.update(self._fid(data, sx, cache_dir))
        return out

    def _feature_extractor(self) -> nn.Module:
        if self._extractor is None:
            self._extractor = fidlib.load_inception(self.device, variant=self.fid.variant)
        return self._extractor

    def _fid(self, data: Dataset, sx: np.ndarray, cache_dir: str | None) -> dict[str, float]:
        rng = np.random.default_rng(self.seed)
        n = self.fid.n_samples
        real_idx = np.sort(rng.permutation(len(data.test_x))[:n])
        fake_idx = rng.permutation(len(sx))[:n]
        extractor = self._feature_extractor()
        ref = fidlib.reference_features(
            data.test_x[real_idx],
            extractor,
            dataset=data.spec.name,
            split=f"test-seed{self.seed}",
            cache_dir=cache_dir,
            batch_size=self.fid.batch_size,
        )
        fake = fidlib.extract_features(
            sx[fake_idx], extractor, batch_size=self.fid.batch_size, desc="synthetic feats"
        )
        out: dict[str, float] = {}
        if self.fid.enabled:
            out["fid"] = fidlib.frechet_distance(ref.stats, fidlib.gaussian_stats(fake))
        if self.kid.enabled:
            out["kid"], out["kid_std"] = fidlib.kid_from_features(
                ref.features,
                fake,
                subsets=self.kid.subsets,
                subset_size=self.kid.subset_size,
                seed=self.seed,
            )
        return out

    def _tabular(self, data: Dataset, sx: np.ndarray, sy: np.ndarray) -> dict[str, float]:
        spec = data.spec
        out: dict[str, float] = {}
        common = {"classifiers": self.tabular_classifiers, "num_classes": spec.num_classes}
        with self._timed("tabular"):
            out.update(tabular_utility(sx, sy, data.test_x, data.test_y, seed=self.seed, **common))
        if self.real_ceiling:
            with self._timed("real_tabular"):
                real = tabular_utility(
                    data.train_x, data.train_y, data.test_x, data.test_y,
                    seed=self.seed, prefix="real_", **common,
                )  # fmt: skip
                real.pop("real_single_class", None)
                out.update(real)
        if self.tvd:
            with self._timed("tvd"):
                names = (spec.columns, spec.target, spec.class_names)
                syn_t, cols = with_label_column(sx, sy, *names)
                real_t, _ = with_label_column(data.test_x, data.test_y, *names)
                out["tvd_1way"], out["tvd_2way"] = marginal_tvd(
                    syn_t, real_t, cols, n_bins=self.tvd_bins
                )
                out["tvd_3way"] = kway_tvd(syn_t, real_t, cols, 3, n_bins=self.tvd_bins)
        return out

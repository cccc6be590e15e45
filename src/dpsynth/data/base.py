"""What every dataset loader returns: a private training split, a real test split, metadata.

The training split is private: only mechanism code (one-shot releases in ``privacy/`` and the
DP-SGD discriminator step) may read ``train_x``. Everything after a release sees only the
release plus the public :class:`DataSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from dpsynth.privacy.release import Spend

Kind = Literal["image", "tabular"]


@dataclass(frozen=True)
class Column:
    """One column of a tabular dataset, as encoded.

    Numeric columns take one encoded dimension scaled to [-1, 1] with public bounds
    ``(low, high)``; categorical columns take ``len(categories)`` one-hot dimensions.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    categories: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == "categorical" else 1


@dataclass(frozen=True)
class DataSpec:
    """Public metadata the methods need; holds no private values.

    Attributes:
        name: dataset name, the same as its config file (``conf/dataset/<name>.yaml``).
        kind: ``image`` (x in [0, 1], shape ``(N, C, H, W)``) or ``tabular`` (encoded rows).
        shape: shape of one record as the methods see it: ``(C, H, W)`` or ``(D,)``.
        num_classes: number of label classes (labels are ``0..num_classes-1``).
        class_names: human-readable class names, ``len == num_classes``.
        columns: tabular column layout (encoded order), empty for images.
        target: tabular label column name.
        balanced: public knowledge, from a source the loader cites, that the classes are
            (about) uniform; decides whether class proportions need a release. Never read
            off the data. A wrong ``True`` is a bias, not a saving: an embedding method then
            matches class c's column at n_c/(n/C) times its true scale (MNIST, before it was
            corrected: results/pearl_fmnist/selection_merf_settings/).
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    columns: tuple[Column, ...] = ()
    target: str = ""
    balanced: bool = False

    @property
    def dim(self) -> int:
        """Flattened record dimension."""
        return int(np.prod(self.shape))


@dataclass
class Dataset:
    """A loaded dataset.

    Attributes:
        spec: public metadata.
        train_x: private records, float32, ``(N, *spec.shape)``.
        train_y: private labels, int64, ``(N,)``.
        test_x: real held-out records, float32, ``(M, *spec.shape)``.
        test_y: real held-out labels, int64, ``(M,)``.
        encoder: for tabular data, the object that decodes encoded rows back to a table.
        spends: Gaussian releases made while loading (DP schema inference), for the run's
            ledger.
        schema_source: ``declared``, ``dp`` or ``nonprivate`` (how the schema was obtained).
        flags: e.g. ``["not_dp"]`` when the schema was read off the private data.
    """

    spec: DataSpec
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    encoder: object | None = field(default=None, repr=False)
    spends: list[Spend] = field(default_factory=list)
    schema_source: str = "declared"
    flags: list[str] = field(default_factory=list)

    @property
    def delta_reserved(self) -> float:
        """δ the loader's DP schema inference used for partition selection (0 if none)."""
        return float(getattr(self.encoder, "schema_delta", 0.0) or 0.0)

    @property
    def n_train(self) -> int:
        return int(self.train_x.shape[0])

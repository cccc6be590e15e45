"""UCI optical recognition of handwritten digits, 8x8 (Alpaydin, Kaynak 1998).

The copy bundled with scikit-learn (``sklearn.datasets.load_digits``: 1,797 images, values
0..16) needs no files, which makes it the dataset for quick and offline runs. It has no
official train/test split, so a stratified split with a fixed seed is made here.
"""

from __future__ import annotations

import numpy as np

from dpsynth.data._common import check_fraction, check_seed
from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError

DIGITS_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_digits(root: str = "", test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Load scikit-learn's 8x8 digits: shape (1, 8, 8), values /16 into [0, 1].

    Args:
        root: ignored (the data ships with scikit-learn); accepted so every loader takes it.
        test_fraction: share of the records held out as the test split, in (0, 1).
        split_seed: seed of the stratified split; the same seed gives the same split.

    Raises:
        ConfigError: ``test_fraction`` or ``split_seed`` is invalid.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = check_fraction("dataset.test_fraction", test_fraction)
    split_seed = check_seed("dataset.split_seed", split_seed)
    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    try:
        idx_train, idx_test = train_test_split(
            np.arange(len(y)), test_size=test_fraction, random_state=split_seed, stratify=y
        )
    except ValueError as exc:
        raise ConfigError(
            f"dataset.test_fraction={test_fraction!r} leaves too few of the {len(y)} digits on "
            f"one side for a stratified split of 10 classes ({exc}); use a value such as 0.2."
        ) from exc
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    spec = DataSpec(
        name="digits",
        kind="image",
        shape=(1, 8, 8),
        num_classes=10,
        class_names=DIGITS_CLASS_NAMES,
        # public: scikit-learn's documentation of load_digits gives "~180" samples per class
        balanced=True,
    )
    return Dataset(
        spec=spec,
        train_x=x[idx_train],
        train_y=y[idx_train],
        test_x=x[idx_test],
        test_y=y[idx_test],
    )

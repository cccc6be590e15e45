"""The data layer: one loader per dataset, each returning a :class:`Dataset`.

Sources: scikit-learn's 8x8 digits, MNIST and Fashion-MNIST (IDX files), CelebA (torchvision's
folder layout), UCI Adult, and any CSV file. Images are float32 in [0, 1] shaped
``(N, C, H, W)``; tabular rows are encoded by a :class:`TabularEncoder` that also decodes
synthetic rows back to a table. Every bad, missing or corrupted file raises
:class:`~dpsynth.errors.DataError` naming the file and saying how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable

from dpsynth.data.adult import load_adult
from dpsynth.data.base import Column, Dataset, DataSpec
from dpsynth.data.celeba import load_celeba
from dpsynth.data.csv import load_csv
from dpsynth.data.digits import load_digits
from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.data.idx import read_idx
from dpsynth.data.mnist import load_mnist
from dpsynth.data.tabular import ColumnSchema, SchemaWarning, TabularEncoder

#: Dataset config name -> loader; the config's other keys are the loader's arguments.
LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "celeba": load_celeba,
    "adult": load_adult,
    "csv": load_csv,
}

__all__ = [
    "LOADERS",
    "Column",
    "ColumnSchema",
    "DataSpec",
    "Dataset",
    "SchemaWarning",
    "TabularEncoder",
    "load_adult",
    "load_celeba",
    "load_csv",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
]

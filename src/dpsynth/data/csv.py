"""Any CSV file with a header line and a label column, for user-supplied tabular data.

Columns are numeric (min-max scaled to [-1, 1]) or categorical (one-hot); the label column is
``target``. The schema (categories, bounds) should be declared as public knowledge with
``schema``; whatever is not declared is inferred from the training file, which is recorded
(``encoder.schema_source == "data"``) and warned about, because it leaks outside the DP
guarantee.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dpsynth.data._common import check_fraction, check_seed
from dpsynth.data.base import Dataset
from dpsynth.data.tabular import load_table, parse_schema, read_delimited
from dpsynth.errors import ConfigError, DataError


def _file(key: str, path: object) -> str:
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ConfigError(f"{key}={path!r} is invalid: it must be the path of a CSV file.")
    full = os.path.abspath(os.path.expandvars(os.path.expanduser(os.fspath(path))))
    if not os.path.isfile(full):
        folder = os.path.dirname(full)
        state = "exists" if os.path.isdir(folder) else "does not exist either"
        raise DataError(
            f"{key}: CSV file {full} not found (its folder {folder} {state}). Set "
            f"{key}=/path/to/file.csv to an existing file with a header line."
        )
    return full


def load_csv(
    path: str,
    target: str,
    categorical: Sequence[str] | None = None,
    test_path: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    schema: Mapping[str, Any] | None = None,
) -> Dataset:
    """Load a CSV file (header line, comma-separated) as a tabular dataset.

    Args:
        path: the training file (or the only file, then split in two).
        target: the label column.
        categorical: columns to one-hot encode; when given, every other column must be
            numeric. None detects them (columns that are mostly not numbers).
        test_path: an optional separate test file with the same columns.
        test_fraction: share of ``path`` held out as test split when ``test_path`` is None.
        split_seed: seed of that split (stratified by label when possible).
        schema: public schema per column: ``{categories: [...]}`` or
            ``{low: ..., high: ..., integer: bool}``; the target takes ``categories``.
            Undeclared columns are inferred from ``path`` with a warning.

    Raises:
        ConfigError: invalid arguments (unknown target or column names, bad schema).
        DataError: missing or malformed files, non-numeric values in numeric columns,
            categories unseen in the schema, a class with no training record.
    """
    path = _file("dataset.path", path)
    if test_path is not None and test_path != "":
        test_path = _file("dataset.test_path", test_path)
    else:
        test_path = None
    if categorical is not None and (
        isinstance(categorical, str)
        or not isinstance(categorical, Sequence)
        or not all(isinstance(c, str) for c in categorical)
    ):
        raise ConfigError(
            f"dataset.categorical={categorical!r} is invalid: it must be a list of column "
            "names, e.g. [color, city], or null to detect them."
        )
    test_fraction = check_fraction("dataset.test_fraction", test_fraction)
    split_seed = check_seed("dataset.split_seed", split_seed)
    declared = parse_schema(schema)
    train = read_delimited(path)
    test = read_delimited(test_path) if test_path is not None else None
    return load_table(
        "csv",
        train,
        test,
        target,
        schema=declared,
        categorical=list(categorical) if categorical is not None else None,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )

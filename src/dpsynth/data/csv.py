"""Any CSV file with a header line and a label column, for user-supplied tabular data.

Columns are numeric (min-max scaled to [-1, 1]) or categorical (one-hot); the label column is
``target``. The schema (categories, bounds, label set) is public knowledge declared in
``schema``, or, for what is not declared, estimated under the run's (ε, δ) by the DP
mechanisms of :mod:`dpsynth.privacy.schema` (``schema_source: dp``, the default; it spends
``schema_share`` of the budget, once per file and configuration thanks to the release cache).
``schema_source: nonprivate`` reads it off the file instead (opt-in, flagged ``not_dp``). See
:mod:`dpsynth.data.tabular` for how values outside the schema are handled (never an error).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dpsynth.data._common import check_fraction, check_seed
from dpsynth.data.base import Dataset
from dpsynth.data.tabular import load_table, parse_schema, read_delimited, schema_settings
from dpsynth.errors import ConfigError, DataError
from dpsynth.privacy.release import PrivacySpec


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
    schema_source: str = "dp",
    allow_nonprivate_schema: bool = False,
    schema_share: float = 0.1,
    dp_schema: Mapping[str, Any] | None = None,
    privacy: PrivacySpec | None = None,
    privacy_epsilon: float | None = None,
    privacy_delta: float | None = None,
    privacy_accountant: str = "pld",
    privacy_neighbours: str = "replace_one",
    cache_dir: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a CSV file (header line, comma-separated) as a tabular dataset.

    Args:
        path: the training file (or the only file, then split in two).
        target: the label column.
        categorical: columns to one-hot encode; when given, every other column must be
            numeric. None: kinds not in ``schema`` are inferred (``schema_source``).
        test_path: an optional separate test file with the same columns.
        test_fraction: share of ``path`` held out as test split when ``test_path`` is None.
        split_seed: seed of that split (stratified by label when possible).
        schema: public schema per column: ``{categories: [...], other: ...}`` or
            ``{low: ..., high: ..., integer: bool, fill: ..., grid: {...}}``; the target takes
            ``categories`` (its class labels). Parts left out are inferred.
        schema_source: ``dp`` (default: undeclared parts estimated under the run's (ε, δ)),
            ``declared`` (everything must be declared) or ``nonprivate`` (read off the file;
            needs ``allow_nonprivate_schema=True`` and flags the run ``not_dp``).
        allow_nonprivate_schema: the opt-in for ``schema_source=nonprivate``.
        schema_share: share of the run's budget the DP schema releases take.
        dp_schema: the DP mechanisms' settings (quantiles, delta_fraction, kinds_fraction,
            grid); see :class:`~dpsynth.privacy.schema.DPSchemaOptions`.
        privacy: the run's (ε, δ, accountant, neighbours), or the same as the four
            ``privacy_*`` values (what the YAML interpolates from ``privacy.*``).
        cache_dir: the run's cache root (the schema release is cached in its ``releases/``).
        seed: the run's seed (part of the cache key).

    Raises:
        ConfigError: invalid arguments (unknown target or column names, bad schema, missing
            declarations under ``declared``, ``nonprivate`` without the opt-in, ``dp``
            without privacy settings).
        DataError: missing or malformed files (unreadable, wrong field counts), a test file
            with other columns. Values never raise: see :mod:`dpsynth.data.tabular`.
    """
    settings = schema_settings(
        schema_source=schema_source,
        allow_nonprivate_schema=allow_nonprivate_schema,
        schema_share=schema_share,
        dp_schema=dp_schema,
        privacy=privacy,
        privacy_epsilon=privacy_epsilon,
        privacy_delta=privacy_delta,
        privacy_accountant=privacy_accountant,
        privacy_neighbours=privacy_neighbours,
        cache_dir=cache_dir,
        seed=seed,
    )
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
        settings=settings,
    )

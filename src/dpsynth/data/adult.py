"""UCI Adult / Census Income (Becker, Kohavi 1996; https://archive.ics.uci.edu/dataset/2/adult).

Reads the original files ``adult.data`` (32,561 rows, train) and ``adult.test`` (16,281 rows,
test; its first line is the comment ``|1x3 Cross validator`` and its labels end with '.'):
no header, ``", "`` separators, ``?`` for a missing value, kept as its own category. The label
is ``income``: ``<=50K`` -> 0, ``>50K`` -> 1.

The encoding schema is public, every constant with its source in ``conf/dataset/adult.yaml``
(``provenance``): the category sets as documented in UCI's ``adult.names`` (plus ``?`` in the
three columns it documents as having missing values: workclass, occupation, native-country),
numeric bounds from ``adult.names``' extraction conditions and the CPS public-use file's
top-codes. Two bounds have no public source, the upper bounds of ``fnlwgt`` and
``capital-loss``: they are DP quantiles (``schema_source: dp``, paid from the run's budget,
see :mod:`dpsynth.privacy.schema`). Numbers outside the bounds are clipped; an unknown category
maps to the column's ``other`` category (never an error: see :mod:`dpsynth.data.tabular`).
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from dpsynth.data._common import expand_root
from dpsynth.data.base import Dataset
from dpsynth.data.tabular import (
    ColumnDecl,
    ColumnSchema,
    RawTable,
    load_table,
    parse_schema,
    read_delimited,
    schema_settings,
)
from dpsynth.errors import ConfigError, DataError
from dpsynth.privacy.release import PrivacySpec

ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_FILES = ("adult.data", "adult.test")
ADULT_TARGET = "income"
ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)

_MISSING = "?"

#: Public schema; category order as documented in adult.names. Sources: adult.yaml's
#: ``provenance`` (one entry per constant, e.g. ``schema.age.low``). ``ColumnDecl`` entries
#: leave their upper bound to a DP quantile.
ADULT_SCHEMA: dict[str, ColumnSchema | ColumnDecl] = {
    "age": ColumnSchema.numeric(17, 90, integer=True),
    "workclass": ColumnSchema.categorical(
        [
            "Private",
            "Self-emp-not-inc",
            "Self-emp-inc",
            "Federal-gov",
            "Local-gov",
            "State-gov",
            "Without-pay",
            "Never-worked",
            _MISSING,
        ],
        other=_MISSING,
    ),
    "fnlwgt": ColumnDecl("numeric", low=1, integer=True),
    "education": ColumnSchema.categorical(
        [
            "Bachelors",
            "Some-college",
            "11th",
            "HS-grad",
            "Prof-school",
            "Assoc-acdm",
            "Assoc-voc",
            "9th",
            "7th-8th",
            "12th",
            "Masters",
            "1st-4th",
            "10th",
            "Doctorate",
            "5th-6th",
            "Preschool",
        ]
    ),
    "education-num": ColumnSchema.numeric(1, 16, integer=True),
    "marital-status": ColumnSchema.categorical(
        [
            "Married-civ-spouse",
            "Divorced",
            "Never-married",
            "Separated",
            "Widowed",
            "Married-spouse-absent",
            "Married-AF-spouse",
        ]
    ),
    "occupation": ColumnSchema.categorical(
        [
            "Tech-support",
            "Craft-repair",
            "Other-service",
            "Sales",
            "Exec-managerial",
            "Prof-specialty",
            "Handlers-cleaners",
            "Machine-op-inspct",
            "Adm-clerical",
            "Farming-fishing",
            "Transport-moving",
            "Priv-house-serv",
            "Protective-serv",
            "Armed-Forces",
            _MISSING,
        ],
        other=_MISSING,
    ),
    "relationship": ColumnSchema.categorical(
        ["Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried"]
    ),
    "race": ColumnSchema.categorical(
        ["White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"], other="Other"
    ),
    "sex": ColumnSchema.categorical(["Female", "Male"]),
    "capital-gain": ColumnSchema.numeric(0, 99_999, integer=True),
    "capital-loss": ColumnDecl("numeric", low=0, integer=True),
    "hours-per-week": ColumnSchema.numeric(1, 99, integer=True),
    "native-country": ColumnSchema.categorical(
        [
            "United-States",
            "Cambodia",
            "England",
            "Puerto-Rico",
            "Canada",
            "Germany",
            "Outlying-US(Guam-USVI-etc)",
            "India",
            "Japan",
            "Greece",
            "South",
            "China",
            "Cuba",
            "Iran",
            "Honduras",
            "Philippines",
            "Italy",
            "Poland",
            "Jamaica",
            "Vietnam",
            "Mexico",
            "Portugal",
            "Ireland",
            "France",
            "Dominican-Republic",
            "Laos",
            "Ecuador",
            "Taiwan",
            "Haiti",
            "Columbia",
            "Hungary",
            "Guatemala",
            "Nicaragua",
            "Scotland",
            "Thailand",
            "Yugoslavia",
            "El-Salvador",
            "Trinadad&Tobago",
            "Peru",
            "Hong",
            "Holand-Netherlands",
            _MISSING,
        ],
        other=_MISSING,
    ),
    "income": ColumnSchema.categorical(["<=50K", ">50K"], other="<=50K"),
}

_HOW_TO = (
    f"To obtain them: set download: true (needs internet; fetches {', '.join(ADULT_FILES)} "
    f"from {ADULT_URL} into dataset.root), or download them by hand from that address (or "
    "https://archive.ics.uci.edu/dataset/2/adult) into a folder and set "
    "dataset.root=/that/folder (or data_dir=...)."
)


def read_adult_file(path: str) -> RawTable:
    """Read one Adult file (``adult.data`` or ``adult.test``) into strings.

    Skips the ``|...`` comment line and strips the trailing '.' of ``adult.test``'s labels.

    Raises:
        DataError: wrong field count, bad encoding or no records, naming file and line.
    """
    raw = read_delimited(path, names=ADULT_COLUMNS, comment="|", what="Adult")
    raw.frame[ADULT_TARGET] = [v.removesuffix(".") for v in raw.frame[ADULT_TARGET]]
    return raw


def find_adult_folder(root: str) -> str | None:
    """The first of ``root/`` and ``root/adult/`` holding both files, or None."""
    for folder in (root, os.path.join(root, "adult")):
        if all(os.path.isfile(os.path.join(folder, f)) for f in ADULT_FILES):
            return folder
    return None


def download_adult(root: str, timeout: float = 60.0) -> None:
    """Fetch ``adult.data`` and ``adult.test`` from UCI into ``root``, each atomically.

    Raises:
        DataError: the download or the write failed.
    """
    os.makedirs(root, exist_ok=True)
    for name in ADULT_FILES:
        url = ADULT_URL + name
        tmp = None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                payload = resp.read()
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.replace(tmp, os.path.join(root, name))
            tmp = None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(
                f"dataset 'adult': downloading {url} into {root} failed "
                f"({type(exc).__name__}: {exc}). {_HOW_TO}"
            ) from exc
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)


def load_adult(
    root: str,
    download: bool = False,
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
    """Load UCI Adult, encoded with its public schema; the label is ``income``.

    Args:
        root: folder holding ``adult.data`` and ``adult.test`` (directly or in ``adult/``).
        download: if they are missing, fetch them from UCI into ``root``.
        schema: overrides of :data:`ADULT_SCHEMA`, column by column (public knowledge only,
            e.g. ``{fnlwgt: {low: 1, high: 1500000, integer: true}}``).
        schema_source: ``dp`` (default: the two bounds without a public source are DP
            quantiles, ``schema_share`` of the run's budget), ``declared`` (``schema`` must
            declare them) or ``nonprivate`` (the training maxima; opt-in, flagged ``not_dp``).
        allow_nonprivate_schema, schema_share, dp_schema, privacy, privacy_epsilon,
            privacy_delta, privacy_accountant, privacy_neighbours, cache_dir, seed: as for
            :func:`dpsynth.data.csv.load_csv`.

    Raises:
        ConfigError: no ``root``, a bad schema setting, ``dp`` without privacy settings.
        DataError: missing or malformed files, or a failed download.
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
    declared = {k: ColumnDecl.of(v) for k, v in ADULT_SCHEMA.items()}
    for k, over in parse_schema(schema).items():
        declared[k] = declared[k].overridden(over) if k in declared else over
    root = expand_root(root)
    if not root:
        raise ConfigError(
            f"dataset.root is empty; Adult needs the folder holding {', '.join(ADULT_FILES)}. "
            f"{_HOW_TO}"
        )
    folder = find_adult_folder(root)
    if folder is None and download:
        download_adult(root)
        folder = find_adult_folder(root)
    if folder is None:
        searched = []
        for f in (root, os.path.join(root, "adult")):
            if not os.path.isdir(f):
                searched.append(f"  - {f} (does not exist)")
                continue
            missing = [n for n in ADULT_FILES if not os.path.isfile(os.path.join(f, n))]
            searched.append(f"  - {f} (missing {', '.join(missing)})")
        raise DataError(
            f"dataset 'adult': files {', '.join(ADULT_FILES)} not found. Folders searched, in "
            "order:\n" + "\n".join(searched) + f"\n{_HOW_TO}"
        )
    train = read_adult_file(os.path.join(folder, ADULT_FILES[0]))
    test = read_adult_file(os.path.join(folder, ADULT_FILES[1]))
    return load_table("adult", train, test, ADULT_TARGET, schema=declared, settings=settings)

"""UCI Adult / Census Income (Becker, Kohavi 1996; https://archive.ics.uci.edu/dataset/2/adult).

Reads the original files ``adult.data`` (32,561 rows, train) and ``adult.test`` (16,281 rows,
test; its first line is the comment ``|1x3 Cross validator`` and its labels end with '.'):
no header, ``", "`` separators, ``?`` for a missing value, kept as its own category. The label
is ``income``: ``<=50K`` -> 0, ``>50K`` -> 1.

The encoding schema is public: categories as documented in UCI's ``adult.names`` (plus ``?``
in the three columns UCI documents as having missing values: workclass, occupation,
native-country) and numeric bounds that are public domain bounds, not the private data's
min/max. Numbers outside them are clipped; an unknown category is a DataError.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request

from dpsynth.data._common import expand_root
from dpsynth.data.base import Dataset
from dpsynth.data.tabular import ColumnSchema, RawTable, load_table, read_delimited
from dpsynth.errors import ConfigError, DataError

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

#: Public schema, from adult.names; category order as documented there.
ADULT_SCHEMA: dict[str, ColumnSchema] = {
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
        ]
    ),
    "fnlwgt": ColumnSchema.numeric(0, 1_500_000, integer=True),
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
        ]
    ),
    "relationship": ColumnSchema.categorical(
        ["Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried"]
    ),
    "race": ColumnSchema.categorical(
        ["White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"]
    ),
    "sex": ColumnSchema.categorical(["Female", "Male"]),
    "capital-gain": ColumnSchema.numeric(0, 99_999, integer=True),
    "capital-loss": ColumnSchema.numeric(0, 4_356, integer=True),
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
        ]
    ),
    "income": ColumnSchema.categorical(["<=50K", ">50K"]),
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


def load_adult(root: str, download: bool = False) -> Dataset:
    """Load UCI Adult, encoded with its public schema; the label is ``income``.

    Args:
        root: folder holding ``adult.data`` and ``adult.test`` (directly or in ``adult/``).
        download: if they are missing, fetch them from UCI into ``root``.

    Raises:
        ConfigError: no ``root``.
        DataError: missing, malformed or out-of-schema files, or a failed download.
    """
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
    return load_table("adult", train, test, ADULT_TARGET, schema=ADULT_SCHEMA)

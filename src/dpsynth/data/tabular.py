"""Tabular data: reading delimited files, the public schema, and the encoder.

Shared by :mod:`dpsynth.data.adult` and :mod:`dpsynth.data.csv`. Encoding follows the usual
practice of DP tabular generators (e.g. DP-MERF, PEARL): numeric columns are min-max scaled
to [-1, 1] with bounds ``(low, high)``, categorical columns are one-hot encoded, and the label
column is kept apart as ``y``.

Privacy: the categories and bounds are part of what a generator releases, so they must be
public knowledge, declared up front (:class:`ColumnSchema`). When they are inferred from the
private file instead, the encoder records ``schema_source = "data"`` and a
:class:`SchemaWarning` says that this leaks outside the DP guarantee and how to declare them.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from dpsynth.data._common import check_train_classes
from dpsynth.data.base import Column, Dataset, DataSpec
from dpsynth.errors import ConfigError, DataError, TrainingError

_INT_RE = re.compile(r"^[+-]?\d+$")
_SCHEMA_KEYS = {"kind", "categories", "low", "high", "integer"}


class SchemaWarning(UserWarning):
    """The table schema was inferred from private data, outside the DP guarantee."""


@dataclass(frozen=True)
class ColumnSchema:
    """Public description of one raw column.

    Attributes:
        kind: ``numeric`` or ``categorical``.
        categories: the allowed values of a categorical column, as strings, in encoded order.
        low: public lower bound of a numeric column (smaller values are clipped).
        high: public upper bound of a numeric column (larger values are clipped).
        integer: the numeric column holds integers; decoded values are rounded.
    """

    kind: Literal["numeric", "categorical"]
    categories: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0
    integer: bool = False

    @staticmethod
    def numeric(low: float, high: float, integer: bool = False) -> ColumnSchema:
        return ColumnSchema("numeric", low=float(low), high=float(high), integer=integer)

    @staticmethod
    def categorical(categories: Sequence[str]) -> ColumnSchema:
        return ColumnSchema("categorical", categories=tuple(str(c) for c in categories))

    def as_dict(self) -> dict[str, Any]:
        """The form accepted by :func:`parse_schema` (e.g. for ``dataset.schema``)."""
        if self.kind == "categorical":
            return {"categories": list(self.categories)}
        low = int(self.low) if self.integer else self.low
        high = int(self.high) if self.integer else self.high
        return {"low": low, "high": high, "integer": self.integer}


def parse_schema(
    schema: Mapping[str, Any] | None, key: str = "dataset.schema"
) -> dict[str, ColumnSchema]:
    """Turn a user schema (e.g. from YAML) into :class:`ColumnSchema` objects.

    Each entry is ``{categories: [...]}`` for a categorical column or
    ``{low: ..., high: ..., integer: true|false}`` for a numeric one (``kind`` optional).

    Raises:
        ConfigError: naming the key and the entry that is malformed.
    """
    if schema is None:
        return {}
    if isinstance(schema, ColumnSchema) or not isinstance(schema, Mapping):
        raise ConfigError(
            f"{key}={schema!r} is invalid: it must map column names to "
            "{categories: [...]} or {low: ..., high: ..., integer: true|false}."
        )
    out: dict[str, ColumnSchema] = {}
    for name, entry in schema.items():
        where = f"{key}.{name}"
        if isinstance(entry, ColumnSchema):
            out[str(name)] = _validated(entry, where)
            continue
        if not isinstance(entry, Mapping) or not set(entry) <= _SCHEMA_KEYS:
            raise ConfigError(
                f"{where}={entry!r} is invalid: it must be {{categories: [...]}} or "
                f"{{low: ..., high: ..., integer: true|false}} (allowed keys: "
                f"{', '.join(sorted(_SCHEMA_KEYS))})."
            )
        kind = entry.get("kind", "categorical" if "categories" in entry else "numeric")
        if kind == "categorical":
            cats = entry.get("categories")
            if isinstance(cats, str | bytes) or not isinstance(cats, Sequence):
                raise ConfigError(
                    f"{where}.categories={cats!r} is invalid: it must be a list of the "
                    "column's values, e.g. [red, green, blue]."
                )
            col = ColumnSchema.categorical([str(c) for c in cats])
        elif kind == "numeric":
            if "low" not in entry or "high" not in entry:
                raise ConfigError(
                    f"{where}={dict(entry)!r} is invalid: a numeric column needs both low and "
                    "high (its public bounds), e.g. {low: 0, high: 100, integer: true}."
                )
            low, high, integer = entry["low"], entry["high"], entry.get("integer", False)
            for k, v in (("low", low), ("high", high)):
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise ConfigError(f"{where}.{k}={v!r} is invalid: it must be a number.")
            if not isinstance(integer, bool):
                raise ConfigError(f"{where}.integer={integer!r} is invalid: use true or false.")
            col = ColumnSchema.numeric(low, high, integer)
        else:
            raise ConfigError(
                f"{where}.kind={kind!r} is invalid: allowed kinds are numeric and categorical."
            )
        out[str(name)] = _validated(col, where)
    return out


def _validated(col: ColumnSchema, where: str) -> ColumnSchema:
    if col.kind == "categorical":
        if not col.categories or len(set(col.categories)) != len(col.categories):
            raise ConfigError(
                f"{where}.categories={list(col.categories)!r} is invalid: it must list at least "
                "one value, each once."
            )
    elif not (math.isfinite(col.low) and math.isfinite(col.high) and col.low < col.high):
        raise ConfigError(
            f"{where} bounds low={col.low!r}, high={col.high!r} are invalid: they must be "
            "finite with low < high."
        )
    return col


@dataclass
class RawTable:
    """A table as read from a file: every cell a string, plus where each row came from.

    Attributes:
        frame: the cells, one column per field, as strings.
        lines: 1-based line number of each row in ``path``, for error messages.
        path: the file.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    path: str


def read_delimited(
    path: str,
    names: Sequence[str] | None = None,
    comment: str | None = None,
    what: str = "CSV",
) -> RawTable:
    """Read a comma-separated file into strings, keeping line numbers.

    Args:
        path: the file.
        names: column names if the file has no header; None reads them from the first line.
        comment: lines starting with this prefix are skipped (Adult's ``|1x3 ...``).
        what: how the file is called in messages (``CSV``, ``Adult``).

    Raises:
        DataError: unreadable file, bad encoding, wrong field count or no records, naming the
            file and line.
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = list(names) if names is not None else None
    lineno = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's BOM
            reader = csv.reader(fh, skipinitialspace=True, strict=False)
            for fields in reader:
                lineno = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if comment is not None and fields[0].startswith(comment):
                    continue
                cells = [f.strip() for f in fields]
                if header is None:
                    header = cells
                    _check_header(header, path, lineno, what)
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{what} file {path}, line {lineno}: {len(cells)} fields, expected "
                        f"{len(header)} ({', '.join(header)}). The file is truncated or "
                        "malformed; fix that line or re-download the file."
                    )
                rows.append(cells)
                lines.append(lineno)
    except FileNotFoundError as exc:
        raise DataError(f"{what} file {path} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} file {path}, near line {lineno + 1}: not UTF-8 text ({exc.reason}). The file "
            "is corrupted or binary; re-save it as UTF-8 CSV or re-download it."
        ) from exc
    except csv.Error as exc:
        raise DataError(
            f"{what} file {path}, line {lineno + 1}: malformed CSV ({exc}). Fix that line or "
            "re-download the file."
        ) from exc
    except OSError as exc:
        raise DataError(
            f"{what} file {path} cannot be read ({exc}). Check its permissions."
        ) from exc
    if header is None or not rows:
        raise DataError(
            f"{what} file {path} has no records ({lineno} lines read). It is empty or "
            "truncated; re-create or re-download it."
        )
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return RawTable(frame=frame, lines=np.asarray(lines, dtype=np.int64), path=path)


def _check_header(header: list[str], path: str, lineno: int, what: str) -> None:
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or any(not h for h in header):
        raise DataError(
            f"{what} file {path}, line {lineno} (header): column names must be non-empty and "
            f"distinct; got {header!r}. Fix the header line."
        )


def _parse_numeric(
    values: pd.Series, column: str, source: str, lines: Sequence[int] | None
) -> np.ndarray:
    """Cells -> finite float64, or DataError naming the first bad cell."""
    parsed = pd.to_numeric(values, errors="coerce")
    arr = np.asarray(parsed, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raw = values.iloc[i]
        what = "is missing" if isinstance(raw, str) and not raw.strip() else f"is {raw!r}"
        raise DataError(
            f"{_where(source, lines, i)}: column {column!r} {what}, but it must be a finite "
            "number (it is a numeric column). Fix or drop that row, or, if the column is "
            "categorical, declare it so (dataset.categorical / dataset.schema)."
        )
    return arr


def _where(source: str, lines: Sequence[int] | None, i: int) -> str:
    if lines is None:
        return f"{source}, row {i}"
    return f"{source}, line {int(lines[i])}"


def _lookup(categories: Sequence[str]) -> dict[Any, int]:
    """Category -> index, also keyed by numeric value so 3, 3.0 and "3" all match "3"."""
    table: dict[Any, int] = {}
    for i, c in enumerate(categories):
        table[c] = i
    for i, c in enumerate(categories):
        try:
            v = float(c)
        except ValueError:
            continue
        if math.isfinite(v):
            table.setdefault(v, i)
    return table


def _decoded_dtype(categories: Sequence[str]) -> str:
    """The dtype pandas would give a column holding these values: int64, float64 or text."""
    if all(_INT_RE.match(c) for c in categories):
        return "int64"
    try:
        [float(c) for c in categories]
    except ValueError:
        return "str"
    return "float64"


def _cast(values: list[str], dtype: str) -> pd.Series:
    if dtype == "int64":
        return pd.Series([int(v) for v in values], dtype="int64")
    if dtype == "float64":
        return pd.Series([float(v) for v in values], dtype="float64")
    return pd.Series(values)  # pandas' default text dtype, as pd.read_csv gives


class TabularEncoder:
    """Encodes tables to float32 rows and decodes (synthetic) rows back to tables.

    Attributes:
        schema: the public schema of the feature columns, in original (= encoded) order.
        columns: the encoded layout, one :class:`Column` per feature.
        target: the label column name.
        class_names: label values; label ``k`` is ``class_names[k]``.
        column_order: all original column names, target included, in file order.
        schema_source: ``public`` if every category and bound was declared, ``data`` if some
            were inferred from the private file (see :attr:`inferred_columns`).
        inferred_columns: the columns (target included) whose schema came from the data.
    """

    def __init__(
        self,
        schema: Mapping[str, ColumnSchema],
        target: str,
        class_names: Sequence[str],
        column_order: Sequence[str] | None = None,
        inferred_columns: Sequence[str] = (),
    ) -> None:
        self.schema: dict[str, ColumnSchema] = dict(schema)
        self.target = target
        self.class_names: tuple[str, ...] = tuple(str(c) for c in class_names)
        self.column_order: tuple[str, ...] = tuple(
            column_order if column_order is not None else [*self.schema, target]
        )
        self.inferred_columns: tuple[str, ...] = tuple(inferred_columns)
        self.schema_source: Literal["public", "data"] = "data" if inferred_columns else "public"
        self.columns: tuple[Column, ...] = tuple(
            Column(name, s.kind, s.categories, s.low, s.high) for name, s in self.schema.items()
        )
        self._lookups = {
            n: _lookup(s.categories) for n, s in self.schema.items() if s.kind == "categorical"
        }
        self._label_lookup = _lookup(self.class_names)
        self._dtypes = {
            n: _decoded_dtype(s.categories)
            for n, s in self.schema.items()
            if s.kind == "categorical"
        }
        self._label_dtype = _decoded_dtype(self.class_names)

    @property
    def dim(self) -> int:
        """Width of an encoded row."""
        return sum(c.width for c in self.columns)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.schema)

    def slices(self) -> list[slice]:
        """The slice of an encoded row occupied by each column, in :attr:`columns` order."""
        out, start = [], 0
        for c in self.columns:
            out.append(slice(start, start + c.width))
            start += c.width
        return out

    def schema_dict(self) -> dict[str, dict[str, Any]]:
        """The full schema, target included, in the form ``dataset.schema`` accepts."""
        out = {n: s.as_dict() for n, s in self.schema.items()}
        out[self.target] = {"categories": list(self.class_names)}
        return out

    def encode(
        self, frame: pd.DataFrame, source: str = "DataFrame", lines: Sequence[int] | None = None
    ) -> np.ndarray:
        """Encode the feature columns of ``frame`` (other columns are ignored).

        Args:
            frame: a table with at least the feature columns; cells may be strings or numbers.
            source: the file (or object) the table came from, for messages.
            lines: the 1-based line of each row in ``source``, for messages.

        Returns:
            float32 array ``(len(frame), dim)``; numerics clipped to their bounds.

        Raises:
            DataError: a feature column is missing, a numeric cell is not a number, or a
                categorical cell is not one of the schema's categories.
        """
        missing = [n for n in self.schema if n not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: missing column(s) {', '.join(missing)}; the table has "
                f"{', '.join(map(str, frame.columns))}. It must have every column of the "
                "schema, with the same names."
            )
        out = np.zeros((len(frame), self.dim), dtype=np.float32)
        for (name, s), sl in zip(self.schema.items(), self.slices(), strict=True):
            values = frame[name]
            if s.kind == "numeric":
                v = np.clip(_parse_numeric(values, name, source, lines), s.low, s.high)
                out[:, sl.start] = 2.0 * (v - s.low) / (s.high - s.low) - 1.0
            else:
                idx = self._codes(values, self._lookups[name], name, s.categories, source, lines)
                out[np.arange(len(frame)), sl.start + idx] = 1.0
        return out

    def encode_labels(
        self, values: pd.Series, source: str = "DataFrame", lines: Sequence[int] | None = None
    ) -> np.ndarray:
        """Label values -> int64 class indices; unknown labels are a :class:`DataError`."""
        return self._codes(
            values, self._label_lookup, self.target, self.class_names, source, lines
        ).astype(np.int64)

    @staticmethod
    def _codes(
        values: pd.Series,
        lookup: dict[Any, int],
        column: str,
        categories: Sequence[str],
        source: str,
        lines: Sequence[int] | None,
    ) -> np.ndarray:
        codes = np.array([lookup.get(v, -1) for v in values.tolist()], dtype=np.int64)
        if (codes < 0).any():
            i = int(np.argmax(codes < 0))
            shown = ", ".join(repr(c) for c in categories[:60])
            more = f", ... ({len(categories)} in all)" if len(categories) > 60 else ""
            raise DataError(
                f"{_where(source, lines, i)}: column {column!r} has value {values.iloc[i]!r}, "
                f"which is not among the allowed categories ({shown}{more}). Fix the value, or "
                "add it to the column's categories in the public schema (dataset.schema)."
            )
        return codes

    def decode(self, x: Any, y: Any = None) -> pd.DataFrame:
        """Decode encoded (e.g. synthetic) rows back to a table.

        Numeric values are clipped to their bounds and rounded for integer columns;
        categorical values are the argmax of their block, so rows need not be exactly one-hot.

        Args:
            x: array-like ``(N, dim)`` of encoded rows.
            y: optional labels ``(N,)`` in ``0..num_classes-1``; adds the target column.

        Returns:
            A DataFrame with the original column names in original order (the target only if
            ``y`` is given) and the dtypes ``pandas.read_csv`` gives such columns.

        Raises:
            ConfigError: wrong shapes or labels out of range.
            TrainingError: non-finite values (a diverged generator).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(
                f"TabularEncoder.decode: rows have shape {x.shape}, expected (N, {self.dim}) "
                "(the encoded width of this dataset)."
            )
        if not np.isfinite(x).all():
            r, c = np.argwhere(~np.isfinite(x))[0]
            raise TrainingError(
                f"TabularEncoder.decode: synthetic row {r} has a non-finite value ({x[r, c]}) "
                f"at encoded position {c}; the generator diverged. Lower the learning rate or "
                "check the run's losses."
            )
        data: dict[str, pd.Series] = {}
        for (name, s), sl in zip(self.schema.items(), self.slices(), strict=True):
            if s.kind == "numeric":
                v = s.low + (np.clip(x[:, sl.start], -1.0, 1.0) + 1.0) / 2.0 * (s.high - s.low)
                if s.integer:
                    lo, hi = math.ceil(s.low), math.floor(s.high)
                    data[name] = pd.Series(np.clip(np.rint(v), lo, hi).astype(np.int64))
                else:
                    data[name] = pd.Series(np.clip(v, s.low, s.high))
            else:
                idx = np.argmax(x[:, sl], axis=1)
                data[name] = _cast([s.categories[i] for i in idx], self._dtypes[name])
        if y is not None:
            labels = np.asarray(y)
            ok = labels.shape == (len(x),) and np.issubdtype(labels.dtype, np.integer)
            if ok and len(labels):
                ok = labels.min() >= 0 and labels.max() < len(self.class_names)
            if not ok:
                raise ConfigError(
                    f"TabularEncoder.decode: labels must be integers 0..{len(self.class_names) - 1}"
                    f" of shape ({len(x)},); got dtype {labels.dtype}, shape {labels.shape}."
                )
            data[self.target] = _cast([self.class_names[i] for i in labels], self._label_dtype)
        order = [c for c in self.column_order if c in data]
        return pd.DataFrame({c: data[c] for c in order})


def _numeric_share(values: pd.Series) -> float:
    """Share of the non-empty cells that parse as finite numbers (0 if all are empty)."""
    text = values.astype(str).str.strip()
    nonempty = text[text != ""]
    if nonempty.empty:
        return 0.0
    parsed = np.asarray(pd.to_numeric(nonempty, errors="coerce"), dtype=np.float64)
    return float(np.isfinite(parsed).mean())


def _sorted_values(values: Sequence[str]) -> list[str]:
    """Distinct values, numerically sorted if they are all numbers, else lexicographically."""
    distinct = sorted(set(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def infer_schema(
    raw: RawTable,
    target: str,
    categorical: Sequence[str] | None,
    declared: Mapping[str, ColumnSchema],
) -> tuple[dict[str, ColumnSchema], tuple[str, ...], list[str]]:
    """Complete a (possibly empty) declared schema from the data of ``raw``.

    A column not in ``declared`` is categorical if listed in ``categorical``; otherwise it is
    numeric when ``categorical`` was given, and detected (mostly numbers -> numeric) when not.
    Its categories or bounds are then read from ``raw``, which is recorded as a leak.

    Returns:
        ``(feature_schema, class_names, inferred_columns)``.
    """
    features: dict[str, ColumnSchema] = {}
    inferred: list[str] = []
    for name in raw.frame.columns:
        if name == target:
            continue
        if name in declared:
            features[name] = declared[name]
            continue
        values = raw.frame[name]
        if categorical is not None:
            numeric = name not in categorical
        else:
            numeric = _numeric_share(values) >= 0.5
        if numeric:
            v = _parse_numeric(values, name, raw.path, raw.lines)
            integer = bool(values.astype(str).str.match(_INT_RE).all())
            low, high = float(v.min()), float(v.max())
            if high <= low:
                high = low + 1.0  # a constant column still needs a non-empty range
            features[name] = ColumnSchema.numeric(low, high, integer)
        else:
            features[name] = ColumnSchema.categorical(_sorted_values(values.astype(str).tolist()))
        inferred.append(name)
    if target in declared:
        if declared[target].kind != "categorical":
            raise ConfigError(
                f"dataset.schema.{target}: the target column must be declared with "
                "categories (its class labels), e.g. {categories: [no, yes]}."
            )
        class_names = declared[target].categories
    else:
        class_names = tuple(_sorted_values(raw.frame[target].astype(str).tolist()))
        inferred.append(target)
    return features, class_names, inferred


def load_table(
    name: str,
    train: RawTable,
    test: RawTable | None,
    target: str,
    schema: Mapping[str, ColumnSchema] | None = None,
    categorical: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Encode raw tables into a tabular :class:`Dataset`.

    Args:
        name: dataset config name (``adult``, ``csv``).
        train: the training file's table; with ``test=None`` it is split in two.
        test: the test file's table, or None.
        target: the label column.
        schema: public schema per column (target: its categories); missing columns are
            inferred from ``train`` with a :class:`SchemaWarning`.
        categorical: columns to treat as categorical when not in ``schema``.
        test_fraction: share held out when splitting ``train``.
        split_seed: seed of that (stratified when possible) split.

    Raises:
        ConfigError: unknown target, categorical or schema column names.
        DataError: malformed values, unknown categories, column mismatch, empty class.
    """
    schema = dict(schema or {})
    columns = [str(c) for c in train.frame.columns]
    if not isinstance(target, str) or target not in columns:
        raise ConfigError(
            f"dataset.target={target!r} is not a column of {train.path}; its columns are: "
            f"{', '.join(columns)}."
        )
    for key, names in (("dataset.categorical", categorical or []), ("dataset.schema", schema)):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise ConfigError(
                f"{key} names unknown column(s) {', '.join(map(repr, unknown))} of {train.path};"
                f" its columns are: {', '.join(columns)}."
            )
    if test is not None and list(test.frame.columns) != columns:
        if set(test.frame.columns) != set(columns):
            raise DataError(
                f"test file {test.path} has columns {', '.join(map(str, test.frame.columns))} "
                f"but the training file {train.path} has {', '.join(columns)}. Both files "
                "need the same columns."
            )
        test = RawTable(test.frame[columns], test.lines, test.path)

    features, class_names, inferred = infer_schema(train, target, categorical, schema)
    if inferred:
        warnings.warn(
            f"dataset {name!r}: the schema (categories / numeric bounds) of column(s) "
            f"{', '.join(inferred)} was inferred from the private file {train.path}, so it is "
            "released outside the DP guarantee. To keep the guarantee end to end, declare it "
            "as public knowledge in dataset.schema, e.g. "
            "{column: {categories: [a, b]}, other: {low: 0, high: 100, integer: true}} "
            "(encoder.schema_dict() prints the inferred one).",
            SchemaWarning,
            stacklevel=3,
        )
    encoder = TabularEncoder(features, target, class_names, columns, inferred)
    x = encoder.encode(train.frame, train.path, train.lines)
    y = encoder.encode_labels(train.frame[target], train.path, train.lines)
    if test is not None:
        train_x, train_y = x, y
        test_x = encoder.encode(test.frame, test.path, test.lines)
        test_y = encoder.encode_labels(test.frame[target], test.path, test.lines)
        source = train.path
    else:
        idx_train, idx_test = _split(len(y), y, test_fraction, split_seed, train.path)
        train_x, train_y, test_x, test_y = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
        source = f"{train.path} (after the split)"
    check_train_classes(name, train_y, encoder.class_names, source)
    spec = DataSpec(
        name=name,
        kind="tabular",
        shape=(encoder.dim,),
        num_classes=len(encoder.class_names),
        class_names=encoder.class_names,
        columns=encoder.columns,
        target=target,
        balanced=False,
    )
    return Dataset(
        spec=spec,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        encoder=encoder,
    )


def _split(
    n: int, y: np.ndarray, test_fraction: float, seed: int, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified when every class can appear on both sides."""
    from sklearn.model_selection import train_test_split

    n_test = int(math.ceil(test_fraction * n))
    if n_test < 1 or n - n_test < 1:
        raise DataError(
            f"{path} has {n} record(s): too few to hold out test_fraction={test_fraction} as a "
            "test split and keep a training split. Use a larger file or pass a test file."
        )
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and min(n_test, n - n_test) >= present
    idx = np.arange(n)
    try:
        idx_train, idx_test = train_test_split(
            idx, test_size=n_test, random_state=seed, stratify=y if can_stratify else None
        )
    except ValueError:
        idx_train, idx_test = train_test_split(idx, test_size=n_test, random_state=seed)
    return np.sort(idx_train), np.sort(idx_test)

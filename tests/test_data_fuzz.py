"""Fuzzing of the file parsers: any input either parses or raises DataError, nothing else.

A half-downloaded or corrupted file must never surface as a numpy, zlib, PIL, pandas or csv
traceback. Examples are kept few (``max_examples``) so the suite stays fast.
"""

from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dpsynth.data.adult import load_adult
from dpsynth.data.celeba import load_celeba, parse_attr_file, parse_partition_file
from dpsynth.data.csv import load_csv
from dpsynth.data.idx import read_idx
from dpsynth.errors import ConfigError, DataError
from dpsynth.privacy.release import PrivacySpec
from tests.datagen import CSV_TARGET, idx_bytes, write_adult, write_celeba, write_csv

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def parses_or_data_error(fn, *args, **kwargs):
    """Run a parser; DataError is an accepted outcome, any other exception fails the test."""
    try:
        out = fn(*args, **kwargs)
    except DataError as exc:
        assert str(exc)  # a message, naming the file (checked by the callers)
        event("DataError")
        return exc
    event("parsed")
    return out


@st.composite
def mutated(draw, base: bytes, max_edits: int = 4):
    """``base`` with a few byte edits, a possible truncation and possible appended junk."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_edits))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 4)) == 0:
        data += draw(st.binary(max_size=16))
    return bytes(data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------------------------
# IDX

_IDX_PLAIN = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))
_IDX_GZ = gzip.compress(_IDX_PLAIN, mtime=0)
_IDX_LABELS = idx_bytes(np.arange(7, dtype=np.uint8))


def _check_idx(path, data):
    with open(path, "wb") as fh:
        fh.write(data)
    out = parses_or_data_error(read_idx, path)
    if isinstance(out, DataError):
        assert os.path.basename(path) in str(out)
    else:
        assert isinstance(out, np.ndarray)


@FUZZ
@given(data=st.binary(max_size=200))
def test_idx_random_bytes(workdir, data):
    _check_idx(str(workdir / "random-idx"), data)


@FUZZ
@given(data=st.one_of(mutated(_IDX_PLAIN), mutated(_IDX_LABELS), mutated(_IDX_PLAIN[:12], 8)))
def test_idx_mutated_plain(workdir, data):
    _check_idx(str(workdir / "mutated-idx3-ubyte"), data)


@FUZZ
@given(data=mutated(_IDX_GZ))
def test_idx_mutated_gzip(workdir, data):
    _check_idx(str(workdir / "mutated-idx3-ubyte.gz"), data)


@FUZZ
@given(payload=mutated(_IDX_PLAIN))
def test_idx_valid_gzip_of_mutated_payload(workdir, payload):
    _check_idx(str(workdir / "gz-of-mutated.gz"), gzip.compress(payload, mtime=0))


# --------------------------------------------------------------------------------------------
# CelebA text files


@pytest.fixture(scope="module")
def celeba_texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba-src")
    write_celeba(root, n=5, size=4)
    base = root / "celeba"
    return (
        (base / "list_attr_celeba.txt").read_bytes(),
        (base / "list_eval_partition.txt").read_bytes(),
    )


_TOKENS = st.sampled_from(["1", "-1", "0", " ", "  ", "\n", "\t", "x.jpg", "Male", "", "-", "5"])


@st.composite
def mutated_text(draw, base: bytes):
    """Token-level edits of a text file (the likely corruptions), then byte-level ones."""
    lines = base.decode().split("\n")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.integers(0, 3))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, draw(st.text(max_size=30)))
        else:
            parts = lines[i].split(" ")
            j = draw(st.integers(0, max(0, len(parts) - 1)))
            if parts:
                parts[j] = draw(_TOKENS)
            lines[i] = " ".join(parts)
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(mutated(text, 2)) if draw(st.booleans()) else text


@FUZZ
@given(data=st.data())
def test_celeba_attr_parser(workdir, celeba_texts, data):
    raw = data.draw(st.one_of(mutated_text(celeba_texts[0]), st.binary(max_size=120)))
    path = str(workdir / "list_attr_celeba.txt")
    with open(path, "wb") as fh:
        fh.write(raw)
    out = parses_or_data_error(parse_attr_file, path)
    if isinstance(out, DataError):
        assert "list_attr_celeba.txt" in str(out)
    else:
        names, files, values = out
        assert values.shape == (len(files), len(names))
        assert set(np.unique(values)) <= {-1, 1}


@FUZZ
@given(data=st.data())
def test_celeba_partition_parser(workdir, celeba_texts, data):
    raw = data.draw(st.one_of(mutated_text(celeba_texts[1]), st.binary(max_size=80)))
    path = str(workdir / "list_eval_partition.txt")
    with open(path, "wb") as fh:
        fh.write(raw)
    out = parses_or_data_error(parse_partition_file, path)
    if isinstance(out, DataError):
        assert "list_eval_partition.txt" in str(out)
    else:
        files, parts, _ = out
        assert len(files) == len(parts) and set(parts.tolist()) <= {0, 1, 2}


@pytest.fixture(scope="module")
def celeba_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba-load")
    write_celeba(root, n=8, size=(12, 14))
    return root


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_celeba_loader_with_mutated_files(celeba_root, data):
    """The whole loader (text files and one JPEG mutated at once), restoring them after."""
    base = celeba_root / "celeba"
    targets = [
        base / "list_attr_celeba.txt",
        base / "list_eval_partition.txt",
        base / "img_align_celeba" / "000001.jpg",
    ]
    originals = [p.read_bytes() for p in targets]
    try:
        for p, raw in zip(targets[:2], originals[:2], strict=True):
            if data.draw(st.booleans()):
                p.write_bytes(data.draw(mutated_text(raw)))
        if data.draw(st.booleans()):
            targets[2].write_bytes(data.draw(mutated(originals[2], 6)))
        for f in os.listdir(base):
            if f.endswith(".npz"):
                os.remove(base / f)
        try:
            parses_or_data_error(load_celeba, str(celeba_root), image_size=4)
        except ConfigError as exc:
            # An edit that renames the header's "Male" leaves a well-formed file without the
            # requested attribute: the project's own error, naming the file and the choices.
            assert "list_attr_celeba.txt" in str(exc) and "valid names" in str(exc)
            event("ConfigError: attribute missing")
    finally:
        for p, raw in zip(targets, originals, strict=True):
            p.write_bytes(raw)


# --------------------------------------------------------------------------------------------
# Adult / CSV readers


@pytest.fixture(scope="module")
def adult_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("adult-src")
    write_adult(root, n_train=12, n_test=6)
    return (root / "adult.data").read_bytes(), (root / "adult.test").read_bytes()


_FIELD = st.one_of(
    st.sampled_from(["?", "", "Private", "abc", "1e9", "-5", "nan", "inf", "<=50K.", '"', "|x"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)


@st.composite
def mutated_csv(draw, base: bytes, sep: str):
    """Field-level edits (wrong values, missing or extra fields), then byte-level ones."""
    lines = base.decode().split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        fields = lines[i].split(sep)
        op = draw(st.integers(0, 3))
        if op == 0 and fields:
            fields[draw(st.integers(0, len(fields) - 1))] = draw(_FIELD)
        elif op == 1 and fields:
            del fields[draw(st.integers(0, len(fields) - 1))]
        elif op == 2:
            fields.append(draw(_FIELD))
        else:
            lines.insert(i, draw(st.text(max_size=20)))
            continue
        lines[i] = sep.join(fields)
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    return draw(mutated(text, 2)) if draw(st.integers(0, 3)) == 0 else text


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_adult_reader(workdir, adult_src, data):
    folder = workdir / "adult"
    folder.mkdir(exist_ok=True)
    which = data.draw(st.sampled_from([0, 1]))
    names = ("adult.data", "adult.test")
    for k, (name, raw) in enumerate(zip(names, adult_src, strict=True)):
        content = data.draw(mutated_csv(raw, ", ")) if k == which else raw
        (folder / name).write_bytes(content)
    out = parses_or_data_error(load_adult, str(folder), privacy=PrivacySpec(1.0, 1e-5))
    if isinstance(out, DataError):
        assert "adult" in str(out)
    else:
        assert out.train_x.shape[1] == 108 and np.isfinite(out.train_x).all()


@pytest.fixture(scope="module")
def csv_src(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv-src") / "t.csv"
    write_csv(path, 16)
    return path.read_bytes()


@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_csv_reader(workdir, csv_src, data):
    path = workdir / "fuzz.csv"
    path.write_bytes(data.draw(mutated_csv(csv_src, ",")))
    mode = data.draw(st.sampled_from(["dp", "nonprivate"]))  # values never raise in either
    kw = {"privacy": PrivacySpec(1.0, 1e-5)} if mode == "dp" else {"allow_nonprivate_schema": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = parses_or_data_error(load_csv, str(path), CSV_TARGET, schema_source=mode, **kw)
        except ConfigError as exc:  # the documented outcome when the header loses the target
            assert "'label' is not a column of" in str(exc)
            return
    if not isinstance(out, DataError):
        assert np.isfinite(out.train_x).all() and out.train_x.shape[1] == out.spec.shape[0]

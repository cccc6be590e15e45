"""Data loaders on tiny generated files in the real formats (fast), and on the real copies
(``-m slow``)."""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
import types
import urllib.error
import warnings

import numpy as np
import pandas as pd
import pytest

from dpsynth.data import LOADERS, SchemaWarning, TabularEncoder, read_idx
from dpsynth.data import adult as adult_mod
from dpsynth.data import celeba as celeba_mod
from dpsynth.data import fashion_mnist as fmnist_mod
from dpsynth.data.adult import ADULT_COLUMNS, load_adult
from dpsynth.data.celeba import load_celeba, parse_attr_file
from dpsynth.data.csv import load_csv
from dpsynth.data.digits import load_digits
from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.data.mnist import IDX_FILES, load_mnist
from dpsynth.errors import ConfigError, DataError, TrainingError
from dpsynth.privacy.release import PrivacySpec
from tests.datagen import (
    ADULT_NUMERIC,
    CELEBA_ATTRIBUTES,
    CSV_TARGET,
    celeba_male,
    celeba_partition,
    idx_bytes,
    write_adult,
    write_celeba,
    write_csv,
    write_idx,
    write_idx_dataset,
)

REAL_MNIST = "/work/shared/data/mnist"
REAL_ADULT = "/work/shared/data/adult"
REAL_FMNIST = "/usr/share/datasets/fashion-mnist"


def _check_image_dataset(ds, name, n_train, n_test, shape, num_classes=10, balanced=True):
    assert ds.spec.name == name
    assert ds.spec.kind == "image"
    assert ds.spec.shape == shape
    assert ds.spec.num_classes == num_classes == len(ds.spec.class_names)
    assert ds.spec.balanced is balanced
    assert ds.spec.columns == ()
    assert ds.train_x.shape == (n_train, *shape) and ds.test_x.shape == (n_test, *shape)
    for x in (ds.train_x, ds.test_x):
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    for y, n in ((ds.train_y, n_train), (ds.test_y, n_test)):
        assert y.dtype == np.int64 and y.shape == (n,)
        assert y.min() >= 0 and y.max() < num_classes
    assert ds.n_train == n_train


@contextlib.contextmanager
def no_schema_warning():
    """Fail if a SchemaWarning is emitted (the schema must be fully public)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaWarning)
        yield


# --------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == "uint8":
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a.idx", arr, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_wrong_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[0] = 7
    path = tmp_path / "bad-magic-idx3-ubyte"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="bad-magic-idx3-ubyte.*invalid magic number"):
        read_idx(path)


def test_read_idx_unknown_dtype_code(tmp_path):
    data = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    data[2] = 0x0A
    path = tmp_path / "code.idx"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="code.idx"):
        read_idx(path)


def test_read_idx_truncated_payload_reports_bytes(tmp_path):
    data = idx_bytes(np.zeros((10, 4, 4), np.uint8))
    path = tmp_path / "short-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data[:-7]))
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert "short-idx3-ubyte.gz" in msg and "truncated" in msg
    assert str(len(data)) in msg and str(len(data) - 7) in msg


def test_read_idx_too_long(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros((3,), np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="long.idx.*longer than its header"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(500, dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="cut.gz.*corrupted or truncated gzip"):
        read_idx(path)


def test_read_idx_header_truncated_and_empty(tmp_path):
    (tmp_path / "hdr").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="hdr.*truncated"):
        read_idx(tmp_path / "hdr")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DataError, match="empty.*truncated"):
        read_idx(tmp_path / "empty")


def test_read_idx_wrong_ndim(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="labels.gz has 1 dimensions, but 3"):
        read_idx(path, expected_ndim=3)


def test_read_idx_missing(tmp_path):
    with pytest.raises(DataError, match="nope.gz does not exist"):
        read_idx(tmp_path / "nope.gz")


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


def test_mnist_flat_layout(tmp_path):
    root = write_idx_dataset(tmp_path, n_train=30, n_test=20)
    ds = load_mnist(root)
    _check_image_dataset(ds, "mnist", 30, 20, (1, 28, 28), balanced=False)
    assert ds.spec.class_names == tuple("0123456789")
    np.testing.assert_array_equal(ds.train_y, np.arange(30) % 10)
    assert ds.train_x[0, 0, 0, 0] == 0.0 and ds.train_x[0, 0, 0, 1] == 1.0


def test_mnist_torchvision_layout_uncompressed(tmp_path):
    root = write_idx_dataset(tmp_path, 12, 10, shape=(5, 7), layout="MNIST", gz=False)
    ds = load_mnist(root)
    _check_image_dataset(ds, "mnist", 12, 10, (1, 5, 7), balanced=False)


def test_mnist_subfolder_layout(tmp_path):
    write_idx_dataset(tmp_path / "mnist", 10, 10, shape=(4, 4))
    ds = load_mnist(str(tmp_path))
    _check_image_dataset(ds, "mnist", 10, 10, (1, 4, 4), balanced=False)


def test_mnist_missing_lists_files_and_folders(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_mnist(str(tmp_path))
    msg = str(err.value)
    for name in IDX_FILES[1:]:
        assert name in msg
    assert str(tmp_path) in msg and os.path.join(str(tmp_path), "MNIST", "raw") in msg
    assert "download: true" in msg and "dataset.root" in msg


def test_mnist_empty_root():
    with pytest.raises(DataError, match="none: dataset.root is empty"):
        load_mnist("")


def test_mnist_count_mismatch(tmp_path):
    root = write_idx_dataset(tmp_path, 10, 10, shape=(4, 4))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(9, dtype=np.uint8))
    with pytest.raises(DataError, match="t10k-images.*t10k-labels.*10 images but 9 labels"):
        load_mnist(root)


def test_mnist_label_out_of_range(tmp_path):
    root = write_idx_dataset(tmp_path, 10, 10, shape=(4, 4))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz has label 12"):
        load_mnist(root)


def test_mnist_empty_class_loads(tmp_path):
    # whether a class is empty is private: no error (the release carries zeros plus noise)
    root = write_idx_dataset(tmp_path, 18, 10, shape=(4, 4), num_classes=9)
    ds = load_mnist(root)
    assert ds.spec.num_classes == 10 and 9 not in set(ds.train_y.tolist())


def test_mnist_truncated_file_in_dataset(tmp_path):
    root = write_idx_dataset(tmp_path, 10, 10, shape=(4, 4))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_mnist(root)


def _fake_torchvision(monkeypatch, behaviour):
    datasets = types.SimpleNamespace(MNIST=behaviour, FashionMNIST=behaviour)
    fake = types.ModuleType("torchvision")
    fake.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", fake)


def test_mnist_download_failure_is_data_error(tmp_path, monkeypatch):
    def fail(root, train=True, download=False):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    _fake_torchvision(monkeypatch, fail)
    with pytest.raises(DataError, match="downloading the IDX files failed.*RuntimeError"):
        load_mnist(str(tmp_path), download=True)


def test_mnist_download_success(tmp_path, monkeypatch):
    calls = []

    def fetch(root, train=True, download=False):
        calls.append(root)
        write_idx_dataset(root, 10, 10, shape=(4, 4), layout="MNIST")

    _fake_torchvision(monkeypatch, fetch)
    ds = load_mnist(str(tmp_path), download=True)
    assert calls == [str(tmp_path)] and ds.n_train == 10
    load_mnist(str(tmp_path), download=True)  # already there: no second download
    assert len(calls) == 1


def test_mnist_download_needs_root():
    with pytest.raises(ConfigError, match="dataset.root is empty"):
        load_mnist("", download=True)


def test_fashion_mnist_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist_mod, "SYSTEM_FOLDERS", [])
    root = write_idx_dataset(tmp_path, 20, 10, layout="FashionMNIST")
    ds = load_fashion_mnist(root)
    _check_image_dataset(ds, "fashion_mnist", 20, 10, (1, 28, 28))
    assert ds.spec.class_names[:2] == ("T-shirt/top", "Trouser")
    assert ds.spec.class_names[-1] == "Ankle boot"


def test_fashion_mnist_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    write_idx_dataset(system, 10, 10, shape=(4, 4))
    monkeypatch.setattr(fmnist_mod, "SYSTEM_FOLDERS", [str(system)])
    ds = load_fashion_mnist("")
    _check_image_dataset(ds, "fashion_mnist", 10, 10, (1, 4, 4))
    ds = load_fashion_mnist(str(tmp_path / "empty-root"))
    assert ds.n_train == 10


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    system = str(tmp_path / "no-such-system-folder")
    monkeypatch.setattr(fmnist_mod, "SYSTEM_FOLDERS", [system])
    with pytest.raises(DataError) as err:
        load_fashion_mnist(str(tmp_path))
    msg = str(err.value)
    assert all(name in msg for name in IDX_FILES)
    assert system in msg and os.path.join(str(tmp_path), "FashionMNIST", "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download: true" in msg


# --------------------------------------------------------------------------------------------
# digits


def test_digits():
    ds = load_digits()
    _check_image_dataset(ds, "digits", ds.n_train, len(ds.test_y), (1, 8, 8))
    assert ds.n_train + len(ds.test_y) == 1797 and len(ds.test_y) == 360
    assert ds.train_x.max() == 1.0
    assert np.bincount(ds.test_y).min() >= 35  # stratified: every class in the test split
    again = load_digits(split_seed=0)
    np.testing.assert_array_equal(ds.train_y, again.train_y)
    other = load_digits(split_seed=1)
    assert not np.array_equal(ds.train_x, other.train_x)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", True])
def test_digits_bad_fraction(bad):
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_digits_bad_seed():
    with pytest.raises(ConfigError, match="split_seed"):
        load_digits(split_seed=-1)


# --------------------------------------------------------------------------------------------
# CelebA


def _celeba_expected(n):
    train = [i for i in range(n) if celeba_partition(i) == 0]
    test = [i for i in range(n) if celeba_partition(i) == 2]
    label = [int(celeba_male(i) == 1) for i in range(n)]
    return [label[i] for i in train], [label[i] for i in test]


def test_celeba_nested_layout(tmp_path):
    root = write_celeba(tmp_path, n=12)
    ds = load_celeba(root, image_size=16)
    train_y, test_y = _celeba_expected(12)
    _check_image_dataset(ds, "celeba", 6, 3, (3, 16, 16), num_classes=2, balanced=False)
    assert ds.spec.class_names == ("not Male", "Male")
    np.testing.assert_array_equal(ds.train_y, train_y)
    np.testing.assert_array_equal(ds.test_y, test_y)


def test_celeba_flat_layout_and_other_attribute(tmp_path):
    root = write_celeba(tmp_path, n=8, size=20, nested=False)
    _, _, values = parse_attr_file(str(tmp_path / "list_attr_celeba.txt"))
    ds = load_celeba(root, image_size=8, attribute="Smiling")
    smiling = values[:, CELEBA_ATTRIBUTES.index("Smiling")]
    expected = [int(smiling[i] == 1) for i in range(8) if celeba_partition(i) == 0]
    assert len(set(expected)) == 2  # seeded: both classes occur in this tiny split
    np.testing.assert_array_equal(ds.train_y, expected)
    assert ds.spec.class_names == ("not Smiling", "Smiling")


def test_celeba_max_train_test(tmp_path):
    root = write_celeba(tmp_path, n=12, size=20)
    ds = load_celeba(root, image_size=4, max_train=2, max_test=1)
    assert ds.train_x.shape == (2, 3, 4, 4) and ds.test_x.shape == (1, 3, 4, 4)


def test_celeba_center_crop(tmp_path):
    from PIL import Image

    root = write_celeba(tmp_path, n=4, size=(20, 10))
    # wide image: red | green | blue bands; the square centre crop keeps only green
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5, 0] = 255
    img[:, 5:15, 1] = 255
    img[:, 15:, 2] = 255
    # lossless (PNG content; PIL goes by content, not extension), so the colours stay exact
    Image.fromarray(img).save(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", "PNG")
    ds = load_celeba(root, image_size=4)
    first = ds.train_x[0]
    assert first[1].min() == 1.0 and first[0].max() == 0.0 and first[2].max() == 0.0


def test_celeba_many_images_threaded(tmp_path):
    root = write_celeba(tmp_path, n=140, size=(9, 11))
    ds = load_celeba(root, image_size=3)
    train_y, test_y = _celeba_expected(140)
    assert ds.train_x.shape == (70, 3, 3, 3) and ds.test_x.shape == (35, 3, 3, 3)
    np.testing.assert_array_equal(ds.train_y, train_y)
    np.testing.assert_array_equal(ds.test_y, test_y)
    for f in os.listdir(tmp_path / "celeba"):
        if f.endswith(".npz"):
            os.remove(tmp_path / "celeba" / f)
    (tmp_path / "celeba" / "img_align_celeba" / "000101.jpg").write_bytes(b"GIF89a broken")
    with pytest.raises(DataError, match="000101.jpg.*line 101 of"):
        load_celeba(root, image_size=3)


def test_celeba_unknown_attribute(tmp_path):
    root = write_celeba(tmp_path, n=4, size=8)
    with pytest.raises(ConfigError, match="'Beard'.*valid names:.*No_Beard.*Young"):
        load_celeba(root, attribute="Beard")


def test_celeba_corrupted_jpeg(tmp_path):
    root = write_celeba(tmp_path, n=8, size=16)
    bad = tmp_path / "celeba" / "img_align_celeba" / "000002.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="000002.jpg.*corrupted"):
        load_celeba(root, image_size=4)


def test_celeba_truncated_jpeg(tmp_path):
    root = write_celeba(tmp_path, n=8, size=(60, 80))
    bad = tmp_path / "celeba" / "img_align_celeba" / "000005.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataError, match="000005.jpg"):
        load_celeba(root, image_size=4)


def test_celeba_missing_image(tmp_path):
    root = write_celeba(tmp_path, n=8, size=8)
    os.remove(tmp_path / "celeba" / "img_align_celeba" / "000004.jpg")
    with pytest.raises(DataError, match="000004.jpg.*line 4 of .*list_eval_partition.txt"):
        load_celeba(root, image_size=4)


def test_celeba_malformed_attr_line(tmp_path):
    root = write_celeba(tmp_path, n=6, size=8)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(" 1", " 2", 1).replace("-1", " 7", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt, line 5: attribute .* allowed"):
        load_celeba(root, image_size=4)
    lines[4] = " ".join(lines[4].split()[:-2])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt, line 5: 39 fields, expected 41"):
        load_celeba(root, image_size=4)


def test_celeba_truncated_attr_file(tmp_path):
    root = write_celeba(tmp_path, n=6, size=8)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt: line 1 declares 6 records .* 4"):
        load_celeba(root, image_size=4)


def test_celeba_bad_partition_line(tmp_path):
    root = write_celeba(tmp_path, n=6, size=8)
    path = tmp_path / "celeba" / "list_eval_partition.txt"
    path.write_text(path.read_text() + "000099.jpg 5\n")
    with pytest.raises(DataError, match="list_eval_partition.txt, line 7"):
        load_celeba(root, image_size=4)
    path.write_text("000099.jpg 0\n" + path.read_text().splitlines()[0] + "\n000004.jpg 2\n")
    with pytest.raises(DataError, match="line 1: image '000099.jpg' has no line in the attr"):
        load_celeba(root, image_size=4)


def test_celeba_path_in_partition_rejected(tmp_path):
    root = write_celeba(tmp_path, n=4, size=8)
    path = tmp_path / "celeba" / "list_eval_partition.txt"
    path.write_text("../../etc/passwd 0\n")
    with pytest.raises(DataError, match="line 1: '../../etc/passwd' is not a plain"):
        load_celeba(root, image_size=4)


def test_celeba_missing_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_celeba(str(tmp_path))
    msg = str(err.value)
    assert "list_attr_celeba.txt" in msg and "list_eval_partition.txt" in msg
    assert os.path.join(str(tmp_path), "celeba") in msg and "img_align_celeba" in msg


def test_celeba_empty_class(tmp_path):
    root = write_celeba(tmp_path, n=8, size=8)
    path = tmp_path / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    male = CELEBA_ATTRIBUTES.index("Male") + 1
    for k in range(2, len(lines)):
        parts = lines[k].split()
        parts[male] = "1"
        lines[k] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")
    ds = load_celeba(root, image_size=4)  # an empty class is private: no error
    assert ds.spec.num_classes == 2 and 0 not in set(ds.train_y.tolist())


def test_celeba_bad_arguments(tmp_path):
    root = write_celeba(tmp_path, n=4, size=8)
    with pytest.raises(ConfigError, match="image_size"):
        load_celeba(root, image_size=0)
    with pytest.raises(ConfigError, match="max_train"):
        load_celeba(root, max_train=-3)


def test_celeba_cache(tmp_path, monkeypatch):
    root = write_celeba(tmp_path, n=8, size=12)
    first = load_celeba(root, image_size=4)
    caches = [f for f in os.listdir(tmp_path / "celeba") if f.endswith(".npz")]
    assert len(caches) == 1 and not any(f.endswith(".tmp") for f in os.listdir(tmp_path / "celeba"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(celeba_mod, "load_image", boom)
    second = load_celeba(root, image_size=4, attribute="Young")  # labels change, images cached
    np.testing.assert_array_equal(first.train_x, second.train_x)
    monkeypatch.undo()
    (tmp_path / "celeba" / caches[0]).write_bytes(b"garbage")  # a damaged cache is rebuilt
    third = load_celeba(root, image_size=4)
    np.testing.assert_array_equal(first.train_x, third.train_x)


def test_celeba_unwritable_folder(tmp_path, monkeypatch):
    root = write_celeba(tmp_path, n=8, size=12)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(celeba_mod.tempfile, "mkstemp", refuse)
    ds = load_celeba(root, image_size=4)
    assert ds.n_train == 4
    assert not [f for f in os.listdir(tmp_path / "celeba") if f.startswith(".dpsynth")]


# --------------------------------------------------------------------------------------------
# tabular: Adult


def _read_adult_reference(path):
    df = pd.read_csv(path, names=list(ADULT_COLUMNS), skipinitialspace=True, comment="|")
    df["income"] = df["income"].str.rstrip(".")
    return df


#: Bounds this fake data respects, declared for tests of the encoder (the real Adult config
#: leaves these two upper bounds to DP quantiles: adult.names gives none).
ADULT_TEST_SCHEMA = {
    "fnlwgt": {"low": 1, "high": 1_500_000, "integer": True},
    "capital-loss": {"low": 0, "high": 4356, "integer": True},
}


def _adult(root, **kwargs):
    """Adult with every part of the schema declared: nothing read from the data, no spend."""
    with no_schema_warning():
        return load_adult(root, schema=ADULT_TEST_SCHEMA, schema_source="declared", **kwargs)


def _nonprivate_csv(path, target=CSV_TARGET, **kwargs):
    return load_csv(
        path, target, schema_source="nonprivate", allow_nonprivate_schema=True, **kwargs
    )


def _edit_adult(path, line, column, value):
    lines = path.read_text().splitlines()
    parts = lines[line].split(", ")
    parts[ADULT_COLUMNS.index(column)] = value
    lines[line] = ", ".join(parts)
    path.write_text("\n".join(lines) + "\n")


def test_adult(tmp_path):
    root = write_adult(tmp_path, 40, 20)
    ds = _adult(root)
    spec, enc = ds.spec, ds.encoder
    assert isinstance(enc, TabularEncoder) and enc.schema_source == "declared"
    assert (ds.schema_source, ds.spends, ds.flags) == ("declared", [], [])
    assert spec.name == "adult" and spec.kind == "tabular" and spec.balanced is False
    assert spec.target == "income" and spec.class_names == ("<=50K", ">50K")
    assert [c.name for c in spec.columns] == [c for c in ADULT_COLUMNS if c != "income"]
    assert spec.shape == (sum(c.width for c in spec.columns),) == (108,)
    assert ds.train_x.shape == (40, 108) and ds.test_x.shape == (20, 108)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int64
    assert ds.train_x.min() >= -1.0 and ds.train_x.max() <= 1.0
    np.testing.assert_array_equal(ds.train_y, np.arange(40) % 2)
    np.testing.assert_array_equal(ds.test_y, np.arange(20) % 2)  # trailing '.' stripped
    workclass = next(c for c in spec.columns if c.name == "workclass")
    assert "?" in workclass.categories
    age = next(c for c in spec.columns if c.name == "age")
    assert (age.kind, age.low, age.high) == ("numeric", 17.0, 90.0)


def test_adult_default_spends_a_share_on_the_two_unsourced_bounds(tmp_path):
    root = write_adult(tmp_path, 40, 20)
    with pytest.raises(ConfigError, match="fnlwgt, capital-loss.*privacy_epsilon"):
        load_adult(root)  # schema_source=dp needs the run's privacy settings
    with pytest.raises(ConfigError, match="schema_source=declared.*capital-loss: high"):
        load_adult(root, schema_source="declared")
    with no_schema_warning():
        ds = load_adult(root, privacy=PrivacySpec(1.0, 1e-5), cache_dir=str(tmp_path / "c"))
    assert ds.schema_source == "dp" and ds.flags == [] and len(ds.spends) == 1
    assert ds.spends[0].statistic == "bins:fnlwgt+bins:capital-loss"
    assert ds.spends[0].share == 0.1 and ds.encoder.schema_delta == 0.0  # nothing selected
    cols = {c.name: c for c in ds.spec.columns}
    assert (cols["fnlwgt"].low, cols["capital-loss"].low) == (1.0, 0.0)
    assert (cols["capital-gain"].high, cols["age"].high) == (99999.0, 90.0)


def test_adult_roundtrip_and_noisy_decode(tmp_path):
    root = write_adult(tmp_path, 40, 20)
    ds = _adult(root)
    enc = ds.encoder
    ref = _read_adult_reference(tmp_path / "adult.data")
    pd.testing.assert_frame_equal(enc.decode(ds.train_x, ds.train_y), ref)
    ref_test = _read_adult_reference(tmp_path / "adult.test")
    pd.testing.assert_frame_equal(enc.decode(ds.test_x, ds.test_y), ref_test)
    without_y = enc.decode(ds.train_x)
    assert list(without_y.columns) == list(ADULT_COLUMNS[:-1])
    np.testing.assert_allclose(enc.encode(ref), ds.train_x)

    rng = np.random.default_rng(0)
    noisy = ds.train_x + rng.normal(0, 0.7, ds.train_x.shape).astype(np.float32)
    out = enc.decode(noisy, rng.integers(0, 2, len(noisy)))
    for col in enc.columns:
        if col.kind == "categorical":
            assert set(out[col.name]) <= set(col.categories)
        else:
            assert out[col.name].dtype == np.int64
            assert col.low <= out[col.name].min() and out[col.name].max() <= col.high
    assert set(out["income"]) <= {"<=50K", ">50K"}


def test_adult_unknown_category_maps_to_other(tmp_path):
    root = write_adult(tmp_path, 10, 6)
    _edit_adult(tmp_path / "adult.test", 3, "race", "Martian")  # adult.test, line 4
    _edit_adult(tmp_path / "adult.data", 2, "sex", "")  # a missing value, no '?' category
    _edit_adult(tmp_path / "adult.data", 5, "income", "maybe")  # an unknown label
    ds = _adult(root)  # never an error: a neighbouring dataset must not be told apart
    test = ds.encoder.decode(ds.test_x, ds.test_y)
    assert test["race"].iloc[2] == "Other"  # race's declared `other` (test row 3 = line 4)
    train = ds.encoder.decode(ds.train_x, ds.train_y)
    assert train["sex"].iloc[2] == "Male"  # no `other` declared: the last category
    assert train["income"].iloc[5] == "<=50K"  # income's declared `other`


def test_adult_non_numeric_takes_the_fill_value(tmp_path):
    root = write_adult(tmp_path, 10, 6)
    path = tmp_path / "adult.data"
    lines = path.read_text().splitlines()
    lines[6] = "forty" + lines[6][2:]
    path.write_text("\n".join(lines) + "\n")
    ds = _adult(root)
    assert ds.encoder.decode(ds.train_x[6:7])["age"].iloc[0] == 17  # fill: the lower bound


def test_adult_out_of_bounds_clipped(tmp_path):
    root = write_adult(tmp_path, 10, 6)
    path = tmp_path / "adult.data"
    lines = path.read_text().splitlines()
    lines[0] = "95" + lines[0][2:]
    path.write_text("\n".join(lines) + "\n")
    ds = _adult(root)
    assert ds.train_x[0, 0] == 1.0
    assert ds.encoder.decode(ds.train_x[:1])["age"].iloc[0] == 90


def test_adult_wrong_field_count(tmp_path):
    root = write_adult(tmp_path, 10, 6)
    path = tmp_path / "adult.data"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(", ", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="adult.data, line 3: 14 fields, expected 15"):
        _adult(root)


def test_adult_missing_files(tmp_path):
    (tmp_path / "adult.data").write_text("")
    with pytest.raises(DataError) as err:
        load_adult(str(tmp_path))
    msg = str(err.value)
    assert "adult.data" in msg and "adult.test" in msg and str(tmp_path) in msg
    assert "download: true" in msg


def test_adult_subfolder(tmp_path):
    write_adult(tmp_path / "adult", 10, 6)
    assert _adult(str(tmp_path)).n_train == 10


def test_adult_download(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_adult(src, 12, 6)
    urls = []

    class Response:
        def __init__(self, data):
            self.data = data

        def read(self):
            return self.data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return Response((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(adult_mod.urllib.request, "urlopen", fake_urlopen)
    ds = _adult(str(tmp_path / "dst"), download=True)
    assert ds.n_train == 12 and [u.rsplit("/", 1)[1] for u in urls] == ["adult.data", "adult.test"]
    assert all(u.startswith("https://archive.ics.uci.edu/") for u in urls)


def test_adult_download_failure(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(adult_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="downloading https://archive.*adult.data.*failed"):
        load_adult(str(tmp_path), download=True)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_adult_empty_class_loads(tmp_path):
    root = write_adult(tmp_path, 10, 6)
    path = tmp_path / "adult.data"
    path.write_text(path.read_text().replace(">50K", "<=50K"))
    ds = _adult(root)  # whether a class is empty is private: no error
    assert np.bincount(ds.train_y, minlength=2).tolist() == [10, 0]
    assert ds.spec.num_classes == 2


# --------------------------------------------------------------------------------------------
# tabular: CSV


def test_csv_nonprivate_schema_warns_and_flags(tmp_path):
    path = write_csv(tmp_path / "t.csv", 40)
    with pytest.warns(SchemaWarning, match="inferred from the private file.*not_dp"):
        ds = _nonprivate_csv(path)
    spec, enc = ds.spec, ds.encoder
    assert enc.schema_source == ds.schema_source == "nonprivate" and ds.flags == ["not_dp"]
    assert ds.spends == []
    assert set(enc.inferred_columns) == {"age", "height", "color", "city", "label"}
    assert spec.name == "csv" and spec.kind == "tabular" and spec.balanced is False
    assert spec.class_names == ("no", "yes") and spec.target == CSV_TARGET
    assert [(c.name, c.kind) for c in spec.columns] == [
        ("age", "numeric"),
        ("height", "numeric"),
        ("color", "categorical"),
        ("city", "categorical"),
    ]
    assert spec.shape == (8,)
    assert ds.train_x.shape == (32, 8) and ds.test_x.shape == (8, 8)
    assert np.bincount(ds.test_y).tolist() == [4, 4]  # stratified
    assert ds.train_x.min() >= -1.0 and ds.train_x.max() <= 1.0


def test_csv_nonprivate_needs_the_opt_in(tmp_path):
    path = write_csv(tmp_path / "t.csv", 20)
    with pytest.raises(ConfigError, match="dataset.allow_nonprivate_schema=true"):
        load_csv(path, CSV_TARGET, schema_source="nonprivate")
    with pytest.raises(ConfigError, match="dataset.schema_source='private'"):
        load_csv(path, CSV_TARGET, schema_source="private")


def test_csv_roundtrip(tmp_path):
    path = write_csv(tmp_path / "t.csv", 30)
    test_path = write_csv(tmp_path / "u.csv", 10, seed=5)
    with pytest.warns(SchemaWarning):
        ds = _nonprivate_csv(path, test_path=test_path)
    ref = pd.read_csv(path)
    out = ds.encoder.decode(ds.train_x, ds.train_y)
    pd.testing.assert_frame_equal(out, ref, check_exact=False, rtol=1e-5)
    assert out["age"].dtype == np.int64 and out["height"].dtype == np.float64


CSV_SCHEMA = {
    "age": {"low": 0, "high": 120, "integer": True},
    "height": {"low": 0.5, "high": 2.5},
    "color": {"categories": ["red", "green", "blue", "other"]},
    "city": {"categories": ["Paris", "Oslo", "New York"]},
    "label": {"categories": ["no", "yes"]},
}


@pytest.mark.parametrize("source", ["declared", "dp"])
def test_csv_declared_schema_no_warning_no_spend(tmp_path, source):
    path = write_csv(tmp_path / "t.csv", 20)
    with no_schema_warning():
        ds = load_csv(path, CSV_TARGET, schema=CSV_SCHEMA, schema_source=source)
    assert ds.encoder.schema_source == ds.schema_source == "declared" and ds.spec.shape == (9,)
    assert ds.spends == [] and ds.flags == []
    assert ds.encoder.schema_dict() == {
        **CSV_SCHEMA,
        "height": {**CSV_SCHEMA["height"], "integer": False},
    }


def test_csv_partial_schema_warns_only_for_rest(tmp_path):
    path = write_csv(tmp_path / "t.csv", 20)
    with pytest.warns(SchemaWarning, match=r"column\(s\) city, label was inferred"):
        ds = _nonprivate_csv(
            path,
            schema={
                "age": {"low": 0, "high": 120},
                "height": {"low": 0, "high": 3},
                "color": {"categories": ["red", "green", "blue"]},
            },
        )
    assert ds.encoder.inferred_columns == ("city", "label")


def _edit_csv(path, line, column, value):
    lines = path.read_text().splitlines()
    fields = lines[line].split(",")
    fields[["age", "height", "color", "city", "label"].index(column)] = value
    lines[line] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("value", ["abc", "", "nan"])
def test_csv_bad_numeric_value_takes_the_fill_value(tmp_path, value):
    path = write_csv(tmp_path / "t.csv", 20, seed=1)
    _edit_csv(tmp_path / "t.csv", 5, "age", value)
    _edit_csv(tmp_path / "t.csv", 3, "height", value)
    schema = {**CSV_SCHEMA, "height": {"low": 0.5, "high": 2.5, "fill": 1.7}}
    ds = load_csv(path, CSV_TARGET, schema=schema, test_fraction=0.5, split_seed=1)
    both = np.concatenate([ds.train_x, ds.test_x])
    assert np.isfinite(both).all() and both.min() >= -1 and both.max() <= 1
    full = load_csv(path, CSV_TARGET, schema=schema, test_path=path)  # the file, in order
    out = full.encoder.decode(full.train_x)
    assert out["age"].iloc[4] == 0  # no fill declared: the lower bound
    assert out["height"].iloc[2] == pytest.approx(1.7)  # the declared fill
    with pytest.warns(SchemaWarning):  # also when the bounds are read off the data
        assert np.isfinite(_nonprivate_csv(path).train_x).all()


def test_csv_declared_categorical_numeric_codes(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("zip,x,y\n" + "".join(f"{1000 + i % 3},{i},{i % 2}\n" for i in range(12)))
    with pytest.warns(SchemaWarning):
        ds = _nonprivate_csv(str(path), "y", categorical=["zip"])
    assert ds.spec.columns[0].categories == ("1000", "1001", "1002")
    out = ds.encoder.decode(ds.train_x, ds.train_y)
    assert out["zip"].dtype == np.int64 and out["y"].dtype == np.int64
    ref = pd.read_csv(path)
    merged = ds.encoder.decode(ds.encoder.encode(ref), ds.encoder.encode_labels(ref["y"]))
    pd.testing.assert_frame_equal(merged, ref)


def test_csv_bom_and_crlf(tmp_path):
    path = tmp_path / "excel.csv"
    rows = ["a,b,y"] + [f"{i},{'xy'[i % 2]},{i % 2}" for i in range(10)]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    with pytest.warns(SchemaWarning):
        ds = _nonprivate_csv(str(path), "y", test_fraction=0.4)
    assert [c.name for c in ds.spec.columns] == ["a", "b"] and ds.spec.class_names == ("0", "1")


def test_csv_missing_target(tmp_path):
    path = write_csv(tmp_path / "t.csv", 10)
    with pytest.raises(ConfigError, match="'income' is not a column.*age, height, color, city"):
        load_csv(path, "income")


def test_csv_unknown_categorical_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", 10)
    with pytest.raises(ConfigError, match="dataset.categorical names unknown column.*'colour'"):
        load_csv(path, CSV_TARGET, categorical=["colour"])
    with pytest.raises(ConfigError, match="dataset.categorical"):
        load_csv(path, CSV_TARGET, categorical="color")


def test_csv_test_file_unseen_category_maps_to_other(tmp_path):
    path = write_csv(tmp_path / "t.csv", 20)
    test_path = tmp_path / "u.csv"
    test_path.write_text(
        "age,height,color,city,label\n30,1.8,purple,Oslo,no\n31,1.7,red,Rome,maybe\n"
    )
    with pytest.warns(SchemaWarning):
        ds = _nonprivate_csv(path, test_path=str(test_path))
    out = ds.encoder.decode(ds.test_x, ds.test_y)
    assert out["color"].tolist() == ["red", "red"]  # sorted: blue, green, red; last = other
    assert out["city"].tolist() == ["Oslo", "Paris"] and out["label"].tolist() == ["no", "yes"]
    declared = load_csv(path, CSV_TARGET, schema=CSV_SCHEMA, test_path=str(test_path))
    out = declared.encoder.decode(declared.test_x, declared.test_y)
    assert out["color"].tolist() == ["other", "red"]  # CSV_SCHEMA's last color is "other"


def test_csv_test_file_other_columns(tmp_path):
    path = write_csv(tmp_path / "t.csv", 20)
    test_path = tmp_path / "u.csv"
    test_path.write_text("age,height,colour,city,label\n30,1.8,red,Oslo,no\n")
    with pytest.raises(DataError, match="u.csv has columns"):
        load_csv(path, CSV_TARGET, test_path=str(test_path))


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv not found"):
        load_csv(str(tmp_path / "nope.csv"), CSV_TARGET)


def test_csv_bad_schema(tmp_path):
    path = write_csv(tmp_path / "t.csv", 10)
    with pytest.raises(ConfigError, match="dataset.schema.age bounds"):
        load_csv(path, CSV_TARGET, schema={"age": {"low": 5, "high": 5}})
    with pytest.raises(ConfigError, match="dataset.schema.age"):
        load_csv(path, CSV_TARGET, schema={"age": {"lo": 0}})
    with pytest.raises(ConfigError, match="unknown column"):
        load_csv(path, CSV_TARGET, schema={"weight": {"low": 0, "high": 1}})
    with pytest.raises(ConfigError, match="dataset.schema.color.other='pink'"):
        load_csv(path, CSV_TARGET, schema={"color": {"categories": ["red"], "other": "pink"}})
    with pytest.raises(ConfigError, match="dataset.schema.age=.*do not apply"):
        load_csv(path, CSV_TARGET, schema={"age": {"low": 0, "categories": ["a"]}})


def test_csv_declared_class_absent_loads(tmp_path):
    path = write_csv(tmp_path / "t.csv", 10)
    schema = {**CSV_SCHEMA, "label": {"categories": ["no", "yes", "maybe"]}}
    ds = load_csv(path, CSV_TARGET, schema=schema)  # an empty class is no error
    assert ds.spec.class_names == ("no", "yes", "maybe") and 2 not in ds.train_y


def test_csv_split_reproducible(tmp_path):
    path = write_csv(tmp_path / "t.csv", 40)
    with pytest.warns(SchemaWarning):
        a = _nonprivate_csv(path, split_seed=3, test_fraction=0.25)
        b = _nonprivate_csv(path, split_seed=3, test_fraction=0.25)
        c = _nonprivate_csv(path, split_seed=4, test_fraction=0.25)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert a.test_x.shape == (10, 8) and not np.array_equal(a.train_x, c.train_x)


def test_encoder_decode_errors(tmp_path):
    ds = _adult(write_adult(tmp_path, 10, 4))
    with pytest.raises(ConfigError, match=r"expected \(N, 108\)"):
        ds.encoder.decode(np.zeros((2, 5)))
    bad = ds.train_x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(TrainingError, match="non-finite"):
        ds.encoder.decode(bad)
    with pytest.raises(ConfigError, match="labels must be integers 0..1"):
        ds.encoder.decode(ds.train_x, np.full(len(ds.train_x), 2))


def test_loader_registry_names():
    assert set(LOADERS) == {"digits", "mnist", "fashion_mnist", "celeba", "adult", "csv"}


# --------------------------------------------------------------------------------------------
# real files (slow)


@pytest.mark.slow
def test_real_mnist():
    ds = load_mnist(REAL_MNIST)
    _check_image_dataset(ds, "mnist", 60000, 10000, (1, 28, 28), balanced=False)
    assert np.bincount(ds.train_y).tolist()[:3] == [5923, 6742, 5958]
    assert np.bincount(ds.test_y).sum() == 10000 and np.bincount(ds.test_y).min() == 892


@pytest.mark.slow
def test_real_fashion_mnist():
    if not os.path.isdir(REAL_FMNIST):
        pytest.skip("apt-get install dataset-fashion-mnist first")
    ds = load_fashion_mnist("")
    _check_image_dataset(ds, "fashion_mnist", 60000, 10000, (1, 28, 28))
    assert np.bincount(ds.train_y).tolist() == [6000] * 10
    assert np.bincount(ds.test_y).tolist() == [1000] * 10


@pytest.mark.slow
def test_real_adult_and_roundtrip():
    ds = _adult(REAL_ADULT)
    assert ds.train_x.shape == (32561, 108) and ds.test_x.shape == (16281, 108)
    assert np.bincount(ds.train_y).tolist() == [24720, 7841]
    assert np.bincount(ds.test_y).tolist() == [12435, 3846]
    for name, split in (
        ("adult.data", (ds.train_x, ds.train_y)),
        ("adult.test", (ds.test_x, ds.test_y)),
    ):
        ref = _read_adult_reference(os.path.join(REAL_ADULT, name))
        pd.testing.assert_frame_equal(ds.encoder.decode(*split), ref)
    assert all(c in ds.encoder.decode(ds.train_x[:1]).columns for c in ADULT_NUMERIC)


@pytest.mark.slow
def test_real_adult_dp_bounds():
    with no_schema_warning():
        ds = load_adult(REAL_ADULT, privacy=PrivacySpec(1.0, 1e-5))
    cols = {c.name: c for c in ds.spec.columns}
    # 99% quantiles (fnlwgt ≈ 5.1e5, capital-loss ≈ 1.98e3) up to the grid's resolution
    assert 3e5 < cols["fnlwgt"].high < 1e6 and 1e3 < cols["capital-loss"].high < 4356
    assert ds.schema_source == "dp" and len(ds.spends) == 1


def test_celeba_corrupted_attribute_header_is_a_data_error(tmp_path):
    # Found by the fuzzer: a mangled header line is the file's fault, not the config's.
    root = write_celeba(tmp_path, n=4, size=20, nested=False)
    path = tmp_path / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    rows = [" ".join(line.split()[:2]) for line in lines[2:]]  # file name + one value each
    path.write_text("\n".join([lines[0], "5", *rows]) + "\n")  # header names one "attribute"
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        load_celeba(root, image_size=8)


def test_celeba_unknown_attribute_on_a_good_file_is_a_config_error(tmp_path):
    root = write_celeba(tmp_path, n=4, size=20, nested=False)  # header has 5_o_Clock_Shadow
    with pytest.raises(ConfigError, match="valid names: 5_o_Clock_Shadow"):
        load_celeba(root, image_size=8, attribute="Mael")

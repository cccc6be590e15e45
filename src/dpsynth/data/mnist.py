"""MNIST handwritten digits (LeCun, Cortes, Burges; http://yann.lecun.com/exdb/mnist/).

Reads the four original IDX gz files (60,000 train / 10,000 test 28x28 grey images), from
``root/``, torchvision's layout ``root/MNIST/raw/`` or ``root/mnist/``; uncompressed copies
are accepted too.
``download=True`` fetches them with ``torchvision.datasets.MNIST``. The IDX-dataset logic
here is shared with :mod:`dpsynth.data.fashion_mnist`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from dpsynth.data._common import expand_root
from dpsynth.data.base import Dataset, DataSpec
from dpsynth.data.idx import read_idx
from dpsynth.errors import ConfigError, DataError

#: The four files every IDX image dataset needs, in the order they are read.
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))

#: Whether MNIST's classes are publicly known to be uniform: no. Its page (LeCun, Cortes,
#: Burges) gives the split sizes only, and the digits were not sampled per class, so the class
#: proportions are private statistics and a method with ``class_counts: auto`` releases them.
#: Assuming 1/10 each (dpsynth before 2026-12-04) mis-scales every class column of a matched
#: embedding by n_c/(n/10): PEARL then fits 1.12× the digit-1 embedding and 0.90× the digit-5
#: one, a bias of the order of the release noise at ε 1 and ~10× it at ε 10
#: (experiments/mnist_table/README.md, "The class prior").
MNIST_BALANCED = False


def _find_file(folder: str, name: str) -> str | None:
    """The gz file, else its uncompressed twin, in ``folder``; None if neither exists."""
    for candidate in (name, name.removesuffix(".gz")):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_idx_files(folders: Sequence[str]) -> tuple[list[str] | None, list[tuple[str, list[str]]]]:
    """Find the first folder that holds all four IDX files.

    Returns:
        ``(paths, report)``: the four paths (or None if no folder has them all) and, per folder
        searched, the file names missing there, for the error message.
    """
    report: list[tuple[str, list[str]]] = []
    for folder in folders:
        found = [_find_file(folder, name) for name in IDX_FILES]
        if all(found):
            return [p for p in found if p is not None], report
        report.append((folder, [n for n, p in zip(IDX_FILES, found, strict=True) if p is None]))
    return None, report


def _missing_message(name: str, report: list[tuple[str, list[str]]], how_to: str) -> str:
    lines = [
        f"dataset {name!r}: the IDX files were not found. A folder must hold all four of "
        f"{', '.join(IDX_FILES)} (gz or uncompressed). Folders searched, in order:"
    ]
    for folder, missing in report:
        state = "does not exist" if not os.path.isdir(folder) else f"missing {', '.join(missing)}"
        lines.append(f"  - {folder} ({state})")
    if not report:
        lines.append("  (none: dataset.root is empty)")
    lines.append(how_to)
    return "\n".join(lines)


def _read_split(images_path: str, labels_path: str, num_classes: int) -> tuple[np.ndarray, ...]:
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.dtype != np.uint8:
        raise DataError(
            f"IDX file {images_path} holds {images.dtype} values, but image files hold unsigned "
            "bytes (dtype code 0x08). The file is not an MNIST-style image file; re-download it."
        )
    if labels.dtype != np.uint8:
        raise DataError(
            f"IDX file {labels_path} holds {labels.dtype} values, but label files hold unsigned "
            "bytes (dtype code 0x08). The file is not an MNIST-style label file; re-download it."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"IDX files {images_path} and {labels_path} disagree: {images.shape[0]} images but "
            f"{labels.shape[0]} labels. One of them is from another dataset or split, or "
            "truncated; re-download both."
        )
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"IDX file {labels_path} has label {int(labels[bad])} at index {bad}; allowed labels "
            f"are 0..{num_classes - 1}. The file is corrupted or from another dataset; "
            "re-download it."
        )
    x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
    return x, labels.astype(np.int64)


def load_idx_dataset(
    name: str,
    folders: Sequence[str],
    class_names: Sequence[str],
    how_to: str,
    *,
    balanced: bool,
    download: Callable[[], None] | None = None,
) -> Dataset:
    """Load an MNIST-style dataset from the first folder holding its four IDX files.

    Args:
        name: dataset config name (``mnist``, ``fashion_mnist``).
        folders: folders to search, in order.
        class_names: the public class names; labels must be ``0..len-1``.
        how_to: the sentence telling the user how to obtain the files.
        balanced: public knowledge (cited by the caller) that every class has the same count;
            decides whether class proportions need a release (``DataSpec.balanced``).
        download: called once if the files are missing (``download: true``); it must put
            them in one of ``folders``. Its failures become :class:`DataError`.
    """
    paths, report = find_idx_files(folders)
    if paths is None and download is not None:
        try:
            download()
        except Exception as exc:  # any download failure is a data problem for the user
            raise DataError(
                f"dataset {name!r}: downloading the IDX files failed ({type(exc).__name__}: "
                f"{exc}). {how_to}"
            ) from exc
        paths, report = find_idx_files(folders)
    if paths is None:
        raise DataError(_missing_message(name, report, how_to))
    train_x, train_y = _read_split(paths[0], paths[1], len(class_names))
    test_x, test_y = _read_split(paths[2], paths[3], len(class_names))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"IDX files {paths[0]} and {paths[2]} disagree: train images are "
            f"{train_x.shape[2:]} but test images are {test_x.shape[2:]}. They come from "
            "different datasets; re-download both."
        )
    spec = DataSpec(
        name=name,
        kind="image",
        shape=tuple(int(s) for s in train_x.shape[1:]),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        balanced=balanced,
    )
    return Dataset(spec=spec, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def root_folders(root: str, torchvision_dir: str, *subdirs: str) -> list[str]:
    """``root/``, torchvision's ``root/<Name>/raw/``, then ``root/<subdir>/`` for each subdir.

    The last form lets one shared data folder hold several datasets (``data_dir/mnist/``,
    ``data_dir/adult/``, ...). Nothing is searched for an empty root.
    """
    if not root:
        return []
    return [
        root,
        os.path.join(root, torchvision_dir, "raw"),
        *(os.path.join(root, d) for d in subdirs),
    ]


def load_mnist(root: str, download: bool = False) -> Dataset:
    """Load MNIST: 60,000 train / 10,000 test images, shape (1, 28, 28), values in [0, 1].

    Args:
        root: folder holding the IDX files, directly, as ``root/MNIST/raw/`` or as
            ``root/mnist/``.
        download: if the files are missing, fetch them into ``root`` with torchvision.

    Raises:
        DataError: files missing, corrupted, inconsistent, or the download failed.
        ConfigError: ``download`` is requested without a ``root``.
    """
    root = expand_root(root)
    if download and not root:
        raise ConfigError(
            "dataset.root is empty but download: true needs a folder to download MNIST into; "
            "set dataset.root=/path/to/data (or data_dir=...)."
        )
    how_to = (
        "To obtain them: set download: true (needs internet; torchvision saves them under "
        "<root>/MNIST/raw/), or copy the four files from http://yann.lecun.com/exdb/mnist/ "
        "(or a mirror) into a folder and point dataset.root=/that/folder (or data_dir=...) to it."
    )

    def fetch() -> None:
        from torchvision import datasets

        datasets.MNIST(root, train=True, download=True)

    return load_idx_dataset(
        "mnist",
        root_folders(root, "MNIST", "mnist"),
        MNIST_CLASS_NAMES,
        how_to,
        balanced=MNIST_BALANCED,
        download=fetch if download else None,
    )

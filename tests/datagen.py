"""Writers of tiny fake datasets in the real file formats, for offline tests.

Each writer returns what to pass to the matching loader (a root folder or a file path).
The values are random but deterministic (``seed``), and every class occurs in every split
whenever the split has at least as many records as there are classes.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence

import numpy as np

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IDX_CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype("int16"): 0x0B,
    np.dtype("int32"): 0x0C,
    np.dtype("float32"): 0x0D,
    np.dtype("float64"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as an uncompressed IDX file."""
    array = np.asarray(array)
    code = _IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray, gz: bool = True) -> str:
    """Write ``array`` as an IDX file, gzip-compressed if ``gz``; returns the path."""
    data = idx_bytes(array)
    path = os.fspath(path)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_idx_dataset(
    folder: str | os.PathLike[str],
    n_train: int = 30,
    n_test: int = 20,
    shape: tuple[int, int] = (28, 28),
    layout: str = "flat",
    gz: bool = True,
    num_classes: int = 10,
    seed: int = 0,
) -> str:
    """Write the four MNIST-style IDX files.

    Args:
        folder: the root folder (created if needed).
        n_train, n_test: records per split; label ``i`` is ``i % num_classes``.
        shape: image rows and columns.
        layout: ``flat`` writes into ``folder/``; ``MNIST`` or ``FashionMNIST`` into
            torchvision's ``folder/<layout>/raw/``.
        gz: gzip the files (else write them uncompressed, without ``.gz``).
        num_classes: labels are ``0..num_classes-1`` (use 9 to leave class 9 empty).
        seed: seed of the random pixels.

    Returns:
        The root to pass to ``load_mnist`` / ``load_fashion_mnist``.
    """
    rng = np.random.default_rng(seed)
    target = os.fspath(folder) if layout == "flat" else os.path.join(folder, layout, "raw")
    os.makedirs(target, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % num_classes).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % num_classes).astype(np.uint8),
    }
    arrays["train_images"][0, 0, 0], arrays["train_images"][0, 0, 1] = 0, 255
    for key, name in IDX_NAMES.items():
        write_idx(os.path.join(target, name if gz else name[:-3]), arrays[key], gz=gz)
    return os.fspath(folder)


#: The 40 attribute names of the real list_attr_celeba.txt, in file order.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)


def celeba_partition(i: int) -> int:
    """Partition of image ``i`` (0-based) in :func:`write_celeba`: 0, 0, 1, 2, repeating."""
    return (0, 0, 1, 2)[i % 4]


def celeba_male(i: int) -> int:
    """``Male`` attribute of image ``i`` in :func:`write_celeba`: both values in each split."""
    return 1 if (i // 4 + i) % 2 == 0 else -1


def write_celeba(
    folder: str | os.PathLike[str],
    n: int = 12,
    size: int | tuple[int, int] = (178, 218),
    nested: bool = True,
    seed: int = 0,
) -> str:
    """Write a CelebA folder in torchvision's layout with ``n`` tiny JPEGs.

    Args:
        folder: the root folder.
        n: number of images, ``000001.jpg`` ... ; partitions from :func:`celeba_partition`,
            ``Male`` from :func:`celeba_male`, other attributes random.
        size: image ``(width, height)`` (an int means square), 178x218 like the real ones.
        nested: write into ``folder/celeba/`` (torchvision) rather than ``folder/``.
        seed: seed of the pixels and other attributes.

    Returns:
        The root to pass to ``load_celeba``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = (size, size) if isinstance(size, int) else size
    base = os.path.join(folder, "celeba") if nested else os.fspath(folder)
    os.makedirs(os.path.join(base, "img_align_celeba"), exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    male = CELEBA_ATTRIBUTES.index("Male")
    attr_lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    for i, name in enumerate(names):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(base, "img_align_celeba", name), quality=90)
        values = rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))
        values[male] = celeba_male(i)
        attr_lines.append(name + " " + " ".join(f"{v:2d}" for v in values))
    with open(os.path.join(base, "list_attr_celeba.txt"), "w") as fh:
        fh.write("\n".join(attr_lines) + "\n")
    with open(os.path.join(base, "list_eval_partition.txt"), "w") as fh:
        fh.write("".join(f"{name} {celeba_partition(i)}\n" for i, name in enumerate(names)))
    return os.fspath(folder)


ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
_ADULT_SAMPLE: dict[str, Sequence[str]] = {
    "workclass": ["Private", "Self-emp-not-inc", "State-gov", "?"],
    "education": ["Bachelors", "HS-grad", "11th", "Masters", "Doctorate"],
    "marital-status": ["Never-married", "Married-civ-spouse", "Divorced"],
    "occupation": ["Adm-clerical", "Exec-managerial", "Handlers-cleaners", "?"],
    "relationship": ["Not-in-family", "Husband", "Wife", "Own-child"],
    "race": ["White", "Black", "Asian-Pac-Islander"],
    "sex": ["Male", "Female"],
    "native-country": ["United-States", "Cuba", "India", "?", "Holand-Netherlands"],
}


def adult_rows(n: int, seed: int = 0, test: bool = False) -> list[str]:
    """``n`` lines in UCI Adult's format (labels alternate; test labels end with '.')."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ("<=50K", ">50K")[i % 2] + ("." if test else "")
        fields = [
            str(rng.integers(17, 91)),
            rng.choice(_ADULT_SAMPLE["workclass"]),
            str(rng.integers(12285, 1_490_401)),
            rng.choice(_ADULT_SAMPLE["education"]),
            str(rng.integers(1, 17)),
            rng.choice(_ADULT_SAMPLE["marital-status"]),
            rng.choice(_ADULT_SAMPLE["occupation"]),
            rng.choice(_ADULT_SAMPLE["relationship"]),
            rng.choice(_ADULT_SAMPLE["race"]),
            rng.choice(_ADULT_SAMPLE["sex"]),
            str(rng.choice([0, 0, 2174, 99999])),
            str(rng.choice([0, 0, 1902, 4356])),
            str(rng.integers(1, 100)),
            rng.choice(_ADULT_SAMPLE["native-country"]),
            label,
        ]
        rows.append(", ".join(str(f) for f in fields))
    return rows


def write_adult(
    folder: str | os.PathLike[str], n_train: int = 40, n_test: int = 20, seed: int = 0
) -> str:
    """Write ``adult.data`` and ``adult.test`` in the original UCI format.

    Includes ``adult.test``'s ``|1x3 Cross validator`` first line, its trailing '.' on labels,
    ``?`` for missing values and the trailing blank line of the real files.

    Returns:
        The root to pass to ``load_adult``.
    """
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adult.data"), "w") as fh:
        fh.write("\n".join(adult_rows(n_train, seed)) + "\n\n")
    with open(os.path.join(folder, "adult.test"), "w") as fh:
        fh.write("|1x3 Cross validator\n")
        fh.write("\n".join(adult_rows(n_test, seed + 1, test=True)) + "\n\n")
    return os.fspath(folder)


#: Label column of :func:`write_csv` files.
CSV_TARGET = "label"
CSV_COLUMNS = ("age", "height", "color", "city", "label")


def write_csv(path: str | os.PathLike[str], n: int = 40, seed: int = 0) -> str:
    """Write a CSV file with a header and columns age (int), height (float), color and city
    (categorical), label (``no`` / ``yes``, alternating).

    Returns:
        The path to pass to ``load_csv`` (with ``target=CSV_TARGET``).
    """
    rng = np.random.default_rng(seed)
    lines = [",".join(CSV_COLUMNS)]
    for i in range(n):
        lines.append(
            f"{rng.integers(18, 80)},{rng.uniform(1.5, 2.1):.3f},"
            f"{rng.choice(['red', 'green', 'blue'])},"
            f"{rng.choice(['Paris', 'Oslo', 'New York'])},{('no', 'yes')[i % 2]}"
        )
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path

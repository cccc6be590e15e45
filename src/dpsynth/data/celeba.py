"""CelebA, aligned and cropped faces (Liu, Luo, Wang, Tang 2015;
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html).

Reads torchvision's CelebA layout, under ``root/celeba/`` or ``root/``:

- ``img_align_celeba/*.jpg``: 202,599 aligned faces of 178x218 pixels;
- ``list_attr_celeba.txt``: line 1 the record count, line 2 the 40 attribute names, then
  ``<file> v1 ... v40`` with values 1 / -1;
- ``list_eval_partition.txt``: ``<file> 0|1|2`` (train / validation / test).

Train is partition 0, test is partition 2 (validation is unused). Images are centre-cropped
to a square of the shorter side (178x178, the usual practice in DP image generation), resized
with an antialiased bilinear filter and labelled by one binary attribute. Decoding ~200k JPEGs
is slow, so the decoded arrays are cached as an ``.npz`` next to the data when the folder is
writable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dpsynth.data._common import check_positive_int, expand_root
from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError, DataError

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
TRAIN_PARTITION, VALID_PARTITION, TEST_PARTITION = 0, 1, 2

#: Bumped whenever the decoding changes, so stale caches are not reused.
CACHE_VERSION = 1
MAX_IMAGE_SIZE = 1024

_HOW_TO = (
    "To obtain CelebA: download img_align_celeba.zip, list_attr_celeba.txt and "
    "list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (or its "
    "Google Drive / Baidu links; torchvision.datasets.CelebA(root, download=True) fetches the "
    "same files but often hits Google Drive's quota), unzip the images into "
    "<root>/celeba/img_align_celeba/ and set dataset.root=<root> (or data_dir=...)."
)


def _read_text(path: str, what: str) -> list[str]:
    """Lines of a text file, with decoding and I/O errors reported against the file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"CelebA {what} file {path} cannot be read ({exc}). {_HOW_TO}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"CelebA {what} file {path}, line {line}: not a text file (byte "
            f"0x{raw[exc.start]:02x} is not valid UTF-8/ASCII). The file is corrupted; "
            f"re-download it. {_HOW_TO}"
        ) from exc
    return text.splitlines()


def _check_filename(name: str, path: str, lineno: int) -> None:
    """An image name must be a plain file name, never a path (no reading outside the folder)."""
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise DataError(
            f"CelebA file {path}, line {lineno}: {name!r} is not a plain image file name "
            "(expected e.g. 000001.jpg, with no folder part). The file is corrupted; "
            "re-download it."
        )


def parse_attr_file(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Returns:
        ``(attribute_names, filenames, values)`` with ``values`` an int8 array of 1 / -1,
        shaped ``(len(filenames), len(attribute_names))``, in file order.

    Raises:
        DataError: naming the file and line of the first malformed line, or a record count
            that disagrees with line 1 (a truncated file).
    """
    lines = _read_text(path, "attribute")
    if len(lines) < 2:
        raise DataError(
            f"CelebA attribute file {path} has {len(lines)} line(s); it needs line 1 = record "
            f"count, line 2 = attribute names, then one line per image. Re-download it. {_HOW_TO}"
        )
    try:
        declared = int(lines[0].strip())
    except ValueError:
        declared = -1
    if declared < 0:
        raise DataError(
            f"CelebA attribute file {path}, line 1: {lines[0][:80]!r} is not a record count "
            f"(a non-negative integer such as 202599). Re-download the file. {_HOW_TO}"
        )
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise DataError(
            f"CelebA attribute file {path}, line 2: {lines[1][:200]!r} must list distinct "
            f"attribute names separated by spaces (e.g. 5_o_Clock_Shadow ... Young). "
            f"Re-download the file. {_HOW_TO}"
        )
    width = len(names) + 1
    filenames: list[str] = []
    rows: list[list[str]] = []
    linenos: list[int] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != width:
            raise DataError(
                f"CelebA attribute file {path}, line {lineno}: {len(parts)} fields, expected "
                f"{width} (a file name and {len(names)} values of 1 or -1): {line[:120]!r}. "
                f"The file is corrupted or truncated; re-download it."
            )
        _check_filename(parts[0], path, lineno)
        if parts[0] in seen:
            raise DataError(
                f"CelebA attribute file {path}, line {lineno}: image {parts[0]!r} is listed "
                "twice. The file is corrupted; re-download it."
            )
        seen.add(parts[0])
        filenames.append(parts[0])
        rows.append(parts[1:])
        linenos.append(lineno)
    if len(filenames) != declared:
        raise DataError(
            f"CelebA attribute file {path}: line 1 declares {declared} records but the file "
            f"has {len(filenames)}. It is truncated or corrupted; re-download it. {_HOW_TO}"
        )
    table = np.array(rows, dtype="U3").reshape(len(rows), len(names))
    positive, negative = table == "1", table == "-1"
    valid = positive | negative
    if not valid.all():
        r, c = np.argwhere(~valid)[0]
        raise DataError(
            f"CelebA attribute file {path}, line {linenos[r]}: attribute {names[c]!r} of "
            f"{filenames[r]} is {rows[r][c]!r}; allowed values are 1 and -1. The file is "
            "corrupted; re-download it."
        )
    values = np.where(positive, 1, -1).astype(np.int8)
    return names, filenames, values


def parse_partition_file(path: str) -> tuple[list[str], np.ndarray, list[int]]:
    """Parse ``list_eval_partition.txt``.

    Returns:
        ``(filenames, partitions, line_numbers)`` in file order; partitions are 0, 1 or 2.
    """
    filenames: list[str] = []
    parts_: list[int] = []
    linenos: list[int] = []
    for lineno, line in enumerate(_read_text(path, "partition"), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(
                f"CelebA partition file {path}, line {lineno}: {line[:120]!r} is not "
                "'<image file> <0|1|2>' (0 = train, 1 = validation, 2 = test). The file is "
                "corrupted; re-download it."
            )
        _check_filename(parts[0], path, lineno)
        filenames.append(parts[0])
        parts_.append(int(parts[1]))
        linenos.append(lineno)
    return filenames, np.asarray(parts_, dtype=np.int8), linenos


def find_celeba_folder(root: str) -> str:
    """The first of ``root/celeba/`` and ``root/`` holding the CelebA files."""
    needed = (ATTR_FILE, PARTITION_FILE, IMAGE_DIR)
    report = []
    for folder in (os.path.join(root, "celeba"), root):
        missing = [n for n in needed if not os.path.exists(os.path.join(folder, n))]
        if not missing:
            return folder
        state = "does not exist" if not os.path.isdir(folder) else f"missing {', '.join(missing)}"
        report.append(f"  - {folder} ({state})")
    raise DataError(
        f"dataset 'celeba': files not found. A folder must hold {ATTR_FILE}, {PARTITION_FILE} "
        f"and the folder {IMAGE_DIR}/. Folders searched, in order:\n"
        + "\n".join(report)
        + f"\n{_HOW_TO}"
    )


def load_image(path: str, size: int, where: str = "") -> np.ndarray:
    """Decode one image: RGB, square centre crop of the shorter side, antialiased resize.

    Returns:
        uint8 array ``(3, size, size)``.

    Raises:
        DataError: the file is missing or not a decodable image; names the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(
            f"CelebA image {path}{where} does not exist. The image folder is incomplete; "
            f"unzip img_align_celeba.zip again. {_HOW_TO}"
        ) from exc
    except Exception as exc:  # PIL raises many types for bad files; all mean "corrupted"
        raise DataError(
            f"CelebA image {path}{where} is corrupted or not an image ({type(exc).__name__}: "
            f"{exc}). Replace it from a fresh copy of img_align_celeba.zip. {_HOW_TO}"
        ) from exc
    w, h = rgb.size
    side = min(w, h)
    left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
    square = rgb.crop((left, top, left + side, top + side))
    small = square.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(paths: Sequence[str], size: int, wheres: Sequence[str]) -> np.ndarray:
    """Decode many images into one uint8 array, with threads (PIL releases the GIL)."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    if len(paths) < 64:
        for i, (p, w) in enumerate(zip(paths, wheres, strict=True)):
            out[i] = load_image(p, size, w)
        return out
    workers = min(16, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for i, arr in enumerate(pool.map(load_image, paths, [size] * len(paths), wheres)):
            out[i] = arr
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _fingerprint(size: int, train: Sequence[str], test: Sequence[str]) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION};{size};".encode())
    h.update("\n".join(train).encode())
    h.update(b"\x00")
    h.update("\n".join(test).encode())
    return h.hexdigest()


def cache_path(folder: str, size: int, max_train: int | None, max_test: int | None) -> str:
    """Where the decoded images of one configuration are cached."""
    tr = "all" if max_train is None else str(max_train)
    te = "all" if max_test is None else str(max_test)
    return os.path.join(folder, f".dpsynth_celeba_{size}px_train-{tr}_test-{te}.npz")


def _load_cache(
    path: str, fingerprint: str, shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays if the cache exists, is readable and matches; else None."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["fingerprint"]) != fingerprint:
                return None
            train, test = npz["train"], npz["test"]
    except Exception:  # a damaged cache is rebuilt, never trusted or fatal
        return None
    if (train.shape, test.shape) != shapes or train.dtype != np.uint8 or test.dtype != np.uint8:
        return None
    return train, test


def _save_cache(path: str, fingerprint: str, train: np.ndarray, test: np.ndarray) -> None:
    """Write the cache atomically; silently skip if the folder is not writable."""
    folder = os.path.dirname(path)
    if not os.access(folder, os.W_OK):
        return
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dpsynth_celeba_", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, fingerprint=np.asarray(fingerprint), train=train, test=test)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass  # read-only or full disk: the cache is an optimisation only
    finally:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], in place on the converted copy (these arrays are large)."""
    out = images.astype(np.float32)
    out /= np.float32(255.0)
    return out


def load_celeba(
    root: str,
    image_size: int = 32,
    attribute: str = "Male",
    max_train: int | None = None,
    max_test: int | None = None,
) -> Dataset:
    """Load CelebA as binary-labelled RGB images of shape (3, image_size, image_size) in [0, 1].

    Args:
        root: folder holding ``celeba/`` (torchvision's layout) or the CelebA files directly.
        image_size: side of the square output images, in pixels.
        attribute: the attribute used as label (1 -> class 1, -1 -> class 0), e.g. ``Male``.
        max_train: keep only the first ``max_train`` training images (file order), for quick
            runs; None keeps all.
        max_test: the same for the test split.

    Raises:
        ConfigError: invalid ``image_size``, ``max_*`` or unknown ``attribute``.
        DataError: missing, malformed or corrupted files, naming the file (and line).
    """
    root = expand_root(root)
    size = check_positive_int("dataset.image_size", image_size)
    assert size is not None
    if size > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"dataset.image_size={image_size!r} is invalid: it must be 1..{MAX_IMAGE_SIZE} "
            "(the aligned faces are 178x218; 32 or 64 are the usual choices)."
        )
    max_train = check_positive_int("dataset.max_train", max_train, allow_none=True)
    max_test = check_positive_int("dataset.max_test", max_test, allow_none=True)
    if not root:
        raise ConfigError(
            f"dataset.root is empty; CelebA needs the folder holding its files. {_HOW_TO}"
        )
    folder = find_celeba_folder(root)
    attr_path = os.path.join(folder, ATTR_FILE)
    part_path = os.path.join(folder, PARTITION_FILE)
    names, attr_files, values = parse_attr_file(attr_path)
    if isinstance(attribute, str) and attribute not in names:
        # Real names are word-like (5_o_Clock_Shadow, Male); a bare number or junk is not.
        bad = [n for n in names if not re.fullmatch(r"\w*[A-Za-z]\w*", n, flags=re.ASCII)]
        if bad:  # a corrupted header, not a wrong choice of attribute
            raise DataError(
                f"{attr_path}: line 2 should name the attributes (e.g. Male Smiling ...) but "
                f"holds {', '.join(repr(n) for n in bad[:5])}; the file is corrupted. "
                "Re-extract list_attr_celeba.txt from the CelebA archive."
            )
    if not isinstance(attribute, str) or attribute not in names:
        raise ConfigError(
            f"dataset.attribute={attribute!r} is not a CelebA attribute of {attr_path}; "
            f"valid names: {', '.join(names)}."
        )
    column = values[:, names.index(attribute)]
    row_of = {f: i for i, f in enumerate(attr_files)}
    part_files, partitions, part_lines = parse_partition_file(part_path)

    def split(which: int, limit: int | None) -> tuple[list[str], list[int], list[str]]:
        files, rows, wheres = [], [], []
        for f, p, ln in zip(part_files, partitions, part_lines, strict=True):
            if p != which:
                continue
            if limit is not None and len(files) >= limit:
                break
            if f not in row_of:
                raise DataError(
                    f"CelebA partition file {part_path}, line {ln}: image {f!r} has no line "
                    f"in the attribute file {attr_path}. The two files are from different "
                    f"versions or one is truncated; re-download both. {_HOW_TO}"
                )
            files.append(f)
            rows.append(row_of[f])
            wheres.append(f" (listed on line {ln} of {part_path})")
        return files, rows, wheres

    train_files, train_rows, train_where = split(TRAIN_PARTITION, max_train)
    test_files, test_rows, test_where = split(TEST_PARTITION, max_test)
    if not train_files or not test_files:
        empty = "train (0)" if not train_files else "test (2)"
        raise DataError(
            f"CelebA partition file {part_path} lists no image in the {empty} partition "
            f"({len(part_files)} lines read). The file is truncated or corrupted; re-download "
            f"it. {_HOW_TO}"
        )
    train_y = (column[train_rows] == 1).astype(np.int64)
    test_y = (column[test_rows] == 1).astype(np.int64)
    class_names = (f"not {attribute}", attribute)

    image_dir = os.path.join(folder, IMAGE_DIR)
    fingerprint = _fingerprint(size, train_files, test_files)
    cache = cache_path(folder, size, max_train, max_test)
    shapes = ((len(train_files), 3, size, size), (len(test_files), 3, size, size))
    cached = _load_cache(cache, fingerprint, shapes)
    if cached is None:
        train_u8 = _decode_all([os.path.join(image_dir, f) for f in train_files], size, train_where)
        test_u8 = _decode_all([os.path.join(image_dir, f) for f in test_files], size, test_where)
        _save_cache(cache, fingerprint, train_u8, test_u8)
    else:
        train_u8, test_u8 = cached
    spec = DataSpec(
        name="celeba",
        kind="image",
        shape=(3, size, size),
        num_classes=2,
        class_names=class_names,
        balanced=False,
    )
    return Dataset(
        spec=spec,
        train_x=_to_unit(train_u8),
        train_y=train_y,
        test_x=_to_unit(test_u8),
        test_y=test_y,
    )

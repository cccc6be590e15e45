"""Reader for the IDX file format of MNIST and Fashion-MNIST.

Format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE"): a 4-byte
magic number ``0x00 0x00 <dtype code> <number of dims>``, then each dimension as a big-endian
uint32, then the values in C order, big-endian. Files are usually gzip-compressed (``.gz``);
compression is detected from the content, not the name.

Every way a file can be damaged (bad gzip stream, truncation, wrong magic, header that does
not match the payload) is reported as a :class:`~dpsynth.errors.DataError` naming the file, so
a half-finished download never surfaces as a numpy or zlib traceback.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from dpsynth.errors import DataError

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: More dimensions than this is certainly a corrupted header, not a real file.
MAX_DIMS = 8

_GZIP_MAGIC = b"\x1f\x8b"
_REFETCH = "Delete it and download it again (or pass download: true to fetch a fresh copy)."


def _read_bytes(path: str) -> bytes:
    """Read a file, gunzipping it if it is a gzip stream, with errors naming the file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise DataError(
            f"IDX file {path} does not exist. Download it (download: true) or set "
            "dataset.root to the folder holding it."
        ) from exc
    except OSError as exc:
        raise DataError(f"IDX file {path} cannot be read ({exc}). Check its permissions.") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(
            f"IDX file {path} is a corrupted or truncated gzip file ({len(raw)} bytes on disk; "
            f"gzip says: {exc}). {_REFETCH}"
        ) from exc


def read_idx(path: str | os.PathLike[str], expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array of the file's dtype, native byte order.

    Args:
        path: the file.
        expected_ndim: if given, the number of dimensions the caller needs (3 for images,
            1 for labels); a different count is a :class:`DataError`.

    Returns:
        The array, shaped as the header says.

    Raises:
        DataError: the file is missing, unreadable, not IDX, or its size disagrees with its
            header; the message names the file and the expected versus actual byte counts.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(
            f"IDX file {path} is truncated: it holds {len(data)} bytes (uncompressed), fewer than "
            f"the 4-byte magic number. {_REFETCH}"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or not 1 <= ndim <= MAX_DIMS:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"IDX file {path} has an invalid magic number 0x{data[:4].hex().upper()}: an IDX file "
            f"starts with 0x0000, a dtype code ({codes}) and 1..{MAX_DIMS} dimensions "
            f"(MNIST images: 0x00000803, labels: 0x00000801). The file is not IDX or is "
            f"corrupted. {_REFETCH}"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"IDX file {path} has {ndim} dimensions, but {expected_ndim} are expected here "
            f"(images have 3: count, rows, columns; labels have 1). Check that the file is not "
            f"swapped with another one. {_REFETCH}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"IDX file {path} is truncated: expected at least {header} header bytes for "
            f"{ndim} dimensions, got {len(data)} bytes (uncompressed). {_REFETCH}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {what}: its header declares shape {dims} of {dtype.name}, "
            f"i.e. {expected} bytes (uncompressed), but it holds {len(data)} bytes. {_REFETCH}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)

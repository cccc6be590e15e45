"""Write a *generated* CelebA at the real size, in torchvision's layout, for smoke runs.

    python experiments/celeba/make_fake_celeba.py ROOT [--workers 2] [--seed 0]

writes ``ROOT/celeba/``:

- ``img_align_celeba/000001.jpg`` … ``202599.jpg``: 178×218 RGB JPEGs, as the real aligned faces;
- ``list_attr_celeba.txt``: line 1 the record count, line 2 the real 40 attribute names, then
  ``<file>  v1 … v40`` with values 1 / -1 (the real file's layout);
- ``list_eval_partition.txt``: ``<file> 0|1|2`` with the real split sizes, in the real order
  (162,770 train, then 19,867 validation, then 19,962 test);
- ``GENERATED_NOT_CELEBA.txt``: the marker that says these are not CelebA (experiments/celeba/run.sh
  reads it and labels every number made on these files a smoke test).

The images are smooth colour fields (a 5×4 random grid upsampled bicubically), so a JPEG is ~3 KB
and the whole folder ~0.85 GB on a 4 KB-block file system (the real one is ~1.4 GB). ``Male`` (p ≈
0.42, about the real share) darkens the lower third of the picture, so a classifier trained on
the generated data has a signal to find; the other 39 attributes are fair coin flips. Every image
depends only on ``(seed, index)``, so the output is the same whatever ``--workers``.

Re-running on a complete folder with the same arguments does nothing (the marker records them);
an incomplete one (an interrupted run) is finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.datagen
from tests.datagen import CELEBA_ATTRIBUTES  # noqa: E402  (the real 40 names, in file order)

#: The real list_eval_partition.txt: images 1..162770 train, then validation, then test.
REAL_SPLITS = (162_770, 19_867, 19_962)
WIDTH, HEIGHT = 178, 218
MARKER = "GENERATED_NOT_CELEBA.txt"
MALE_P = 0.42
CHUNK = 2000


def image_name(i: int) -> str:
    """File name of image ``i`` (0-based), as the real files: ``000001.jpg``."""
    return f"{i + 1:06d}.jpg"


def attributes(n: int, seed: int) -> np.ndarray:
    """The ``(n, 40)`` int8 attribute table (1 / -1); ``Male`` with p = MALE_P, others p = 0.5."""
    rng = np.random.default_rng([seed, 1])
    p = np.full(len(CELEBA_ATTRIBUTES), 0.5)
    p[CELEBA_ATTRIBUTES.index("Male")] = MALE_P
    return np.where(rng.random((n, len(CELEBA_ATTRIBUTES))) < p, 1, -1).astype(np.int8)


def render(i: int, male: bool, seed: int) -> np.ndarray:
    """Image ``i`` as a ``(HEIGHT, WIDTH, 3)`` uint8 array: a smooth random colour field."""
    from PIL import Image

    rng = np.random.default_rng([seed, 2, i])
    grid = rng.integers(40, 216, (5, 4, 3)).astype(np.int16)
    if male:
        grid[3:] -= 35  # the lower rows: a darker chin / beard region
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))


def write_chunk(folder: str, start: int, males: list[bool], seed: int, quality: int) -> int:
    """Write images ``start … start+len(males)-1`` that are missing; returns how many."""
    from PIL import Image

    written = 0
    for k, male in enumerate(males):
        path = os.path.join(folder, image_name(start + k))
        if os.path.exists(path):
            continue
        tmp = path + ".part"
        Image.fromarray(render(start + k, male, seed)).save(tmp, format="JPEG", quality=quality)
        os.replace(tmp, path)  # never a half-written .jpg after an interruption
        written += 1
    return written


def write_fake_celeba(
    root: str | os.PathLike[str],
    splits: tuple[int, int, int] = REAL_SPLITS,
    seed: int = 0,
    workers: int = 2,
    quality: int = 75,
    log=print,  # noqa: ANN001
) -> dict[str, float]:
    """Write the generated CelebA under ``root/celeba/``; returns timings and sizes."""
    base = Path(root) / "celeba"
    images = base / "img_align_celeba"
    n = sum(splits)
    params = {"splits": list(splits), "seed": seed, "quality": quality, "size": [WIDTH, HEIGHT]}
    marker = base / MARKER
    if marker.exists():
        done = json.loads(marker.read_text().split("\n", 2)[2] or "{}")
        if done.get("params") == params:
            log(f"{base}: already complete ({n} generated images); nothing to do")
            return done["stats"]
        marker.unlink()  # other parameters: rewrite (existing JPEGs are reused only if equal)
        for p in images.glob("*.jpg"):
            p.unlink()
    images.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    attr = attributes(n, seed)
    names = [image_name(i) for i in range(n)]
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [
        f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attr, strict=True)
    ]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    part = np.repeat([0, 1, 2], splits)
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(names, part, strict=True))
    )
    t_lists = time.perf_counter() - t0
    male = (attr[:, CELEBA_ATTRIBUTES.index("Male")] == 1).tolist()
    t1 = time.perf_counter()
    written = 0
    starts = range(0, n, CHUNK)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [
            pool.submit(write_chunk, str(images), s, male[s : s + CHUNK], seed, quality)
            for s in starts
        ]
        for k, fut in enumerate(futures, start=1):
            written += fut.result()
            if k % 10 == 0 or k == len(futures):
                done_n = min(k * CHUNK, n)
                rate = done_n / (time.perf_counter() - t1)
                log(f"  {done_n:>7,}/{n:,} images ({rate:,.0f}/s)")
    t_images = time.perf_counter() - t1
    jpeg_bytes = sum(e.stat().st_size for e in os.scandir(images) if e.name.endswith(".jpg"))
    stats = {
        "images": n,
        "written": written,
        "seconds_lists": round(t_lists, 2),
        "seconds_images": round(t_images, 2),
        "jpeg_mb": round(jpeg_bytes / 2**20, 1),
        "workers": workers,
    }
    marker.write_text(
        "GENERATED images, NOT CelebA: numbers made on this folder are a smoke test.\n"
        "Written by experiments/celeba/make_fake_celeba.py.\n"
        + json.dumps({"params": params, "stats": stats})
    )
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="writes ROOT/celeba/ (pass ROOT as data_dir=ROOT)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=75, help="JPEG quality (real files: ~95)")
    p.add_argument(
        "--splits",
        type=int,
        nargs=3,
        default=REAL_SPLITS,
        metavar=("TRAIN", "VALID", "TEST"),
        help="images per partition (default: the real 162770 19867 19962)",
    )
    args = p.parse_args(argv)
    if min(args.splits) < 1:
        p.error("--splits: every partition needs at least one image")
    print(f"writing GENERATED (not real) CelebA files under {Path(args.root) / 'celeba'}")
    stats = write_fake_celeba(args.root, tuple(args.splits), args.seed, args.workers, args.quality)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""FID sanity figures on the real Fashion-MNIST (the evaluation issue's checks), with the
offline Inception-v3 of ``dpsynth.evaluation.fid`` and the published protocol (10,000 images
a side, grayscale → 3 channels, bilinear resize to 299).

1. FID / KID(real train 10k, real test 10k): how far two real samples are (should be small).
2. FID / KID(synthetic 10k of a run, real test 10k) for the runs given with ``--run``
   (``samples.npz`` of a run folder), to set beside the published FID (~100 at ε = 1:
   PEARL re-run 109, DP-MERF 97.1).

The test reference features are cached (``--cache``), so each extra run costs 10k images.
Results are written after every step to ``--out`` (JSON + Markdown), so a stopped run keeps
what it finished. Usage::

    python experiments/fid_sanity/run.py --run outputs/multirun/fmnist_table/.../pearl/eps1.0_...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.evaluation.fid import (
    extract_features,
    fid_from_features,
    kid_from_features,
    load_inception,
    reference_features,
)
from dpsynth.methods.base import flush_denormals_process_wide
from dpsynth.records import write_json


def balanced_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n records, n / C from each class, drawn with a public seed."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in classes])
    )


def write(out: Path, rows: list[dict]) -> None:
    write_json(out / "fid_sanity.json", {"rows": rows})
    lines = [
        "# FID sanity figures, Fashion-MNIST (Inception-v3 pool features, 10k vs real test 10k)",
        "",
        "| compared with real test | n | FID | KID (×1000) | method | ε | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['n']} | {r['fid']:.2f} | {1000 * r['kid']:.2f} ± "
            f"{1000 * r['kid_std']:.2f} | {r.get('method', '')} | {r.get('epsilon', '')} | "
            f"{r['seconds']:.0f} |"
        )
    (out / "fid_sanity.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", default="")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--run", action="append", default=[], help="run folder with samples.npz")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "dpsynth" / "eval"))
    ap.add_argument("--out", default="results/fid_sanity")
    args = ap.parse_args()
    flush_denormals_process_wide()  # before torch starts its workers, as the CLI does
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_fashion_mnist(args.root)
    extractor = load_inception()
    t0 = time.perf_counter()
    test = data.test_x[balanced_subset(data.test_y, args.n, seed=0)]
    ref = reference_features(
        test, extractor, dataset="fashion_mnist", split="test", cache_dir=args.cache
    )
    rows: list[dict] = []

    def compare(what: str, images: np.ndarray, **extra: object) -> None:
        t = time.perf_counter()
        feats = extract_features(images, extractor, desc=what)
        kid, kid_std = kid_from_features(ref.features, feats)
        rows.append(
            {
                "what": what,
                "n": len(images),
                "fid": fid_from_features(ref.features, feats),
                "kid": kid,
                "kid_std": kid_std,
                "seconds": time.perf_counter() - t,
                **extra,
            }
        )
        write(out, rows)
        print(rows[-1], flush=True)

    print(f"test reference: {time.perf_counter() - t0:.0f} s", flush=True)
    compare("real train", data.train_x[balanced_subset(data.train_y, args.n, seed=1)])
    for run in map(Path, args.run):
        rec = json.loads((run / "metrics.json").read_text())
        z = np.load(run / "samples.npz")
        x = z["x"][balanced_subset(z["y"], args.n, seed=2)]
        compare(
            f"synthetic ({run.name})", x, method=rec["method"], epsilon=rec["privacy"]["epsilon"]
        )


if __name__ == "__main__":
    main()

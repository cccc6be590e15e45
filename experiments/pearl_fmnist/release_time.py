"""Time PEARL's release alone on the real Fashion-MNIST (the target: within 3× of the
60000×784×1500 projection's matrix-multiply floor, ≤ 1.3 s on these 2-core machines).

Runs the real mechanism (``PEARL.release``: frequencies, class-conditional CF embedding,
calibration, Gaussian noise, ledger, release cache) ``--repeats`` times on fresh caches and prints
the wall time of each, the embedding's share, and the content hash's. Usage:
``python experiments/pearl_fmnist/release_time.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.methods.base import PrivacySpec, RunContext
from dpsynth.methods.embedding import class_embedding, draw_frequencies
from dpsynth.methods.pearl import PEARL
from dpsynth.privacy.release import ReleaseCache, fingerprint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    data = load_fashion_mnist(args.root)
    method = PEARL(num_features=1500, sigma0_sq=127.0)
    privacy = PrivacySpec(epsilon=1.0, delta=1e-5)
    print(f"torch threads: {torch.get_num_threads()}")
    for seed in range(args.repeats):
        folder = Path(tempfile.mkdtemp())
        ctx = RunContext(
            seed=seed,
            run_dir=folder,
            dataset_options={"sigma0_sq": 127.0},
            cache=ReleaseCache(folder / "cache"),
            dataset_id="fashion_mnist",
        )
        t0 = time.perf_counter()
        method.release(data, privacy, ctx)
        print(f"release (seed {seed}): {time.perf_counter() - t0:.3f} s")
    x = data.train_x.reshape(data.n_train, -1)
    t0 = time.perf_counter()
    class_embedding(x, data.train_y, draw_frequencies(1500, x.shape[1], 127.0, 0), 10)
    print(f"  of which the embedding: {time.perf_counter() - t0:.3f} s")
    t0 = time.perf_counter()
    fingerprint(data.train_x, data.train_y)
    print(f"  of which the cache key's content hash: {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()

"""Quick tuning runs of method=dpsgd on real Fashion-MNIST (not the benchmark: see run.sh).

Trains through ``DPSGDGAN.train_private`` exactly as the pipeline does, then scores a quick
proxy of the benchmark's evaluation: logistic regression and a small CNN trained on
``--n-synth`` synthetic images, tested on the real test set. One JSON line per run is appended
to ``--out``.

Usage: python experiments/dpsgd_fmnist/tune.py --epsilon 10 [--neighbours replace_one]
         [--accountant pld] [--threads 1] key=value ...
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.methods.base import PrivacySpec, RunContext
from dpsynth.methods.dpsgd import DPSGDGAN


def logreg_acc(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=200)
    clf.fit(x.reshape(len(x), -1), y)
    return float((clf.predict(xt.reshape(len(xt), -1)) == yt).mean())


def cnn_acc(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, epochs: int = 3) -> float:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), 128):
            b = perm[i : i + 128]
            loss = nn.functional.cross_entropy(net(xs[b]), ys[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(torch.from_numpy(xt[i : i + 1000])).argmax(1) for i in
                          range(0, len(xt), 1000)])  # fmt: skip
    return float((pred.numpy() == yt).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--neighbours", default="replace_one", help="replace_one | add_remove")
    ap.add_argument("--accountant", default="pld", help="pld | rdp (rdp needs add_remove)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-synth", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default="")
    ap.add_argument("--out", default="results/dpsgd_fmnist/tuning.jsonl")
    ap.add_argument("options", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    opts = {}
    for kv in args.options:
        k, v = kv.split("=", 1)
        opts[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false", "null") else v
    method = DPSGDGAN(checkpoint_every=0, **opts)
    data = load_fashion_mnist(args.root)
    run_dir = Path("/tmp/dpsgd_tune") / str(time.time_ns())
    ctx = RunContext(seed=args.seed, run_dir=run_dir, progress=False,
                     trainer={"accelerator": "cpu"})  # fmt: skip
    t0 = time.perf_counter()
    privacy = PrivacySpec(args.epsilon, args.delta, args.accountant, args.neighbours)
    synth, ledger = method.train_private(data, privacy, ctx)
    t_train = time.perf_counter() - t0
    x, y = synth.sample(args.n_synth, seed=args.seed + 1)
    t1 = time.perf_counter()
    row = {
        "epsilon": args.epsilon, "options": opts, "train_s": round(t_train, 1),
        "delta": args.delta, "neighbours": ledger.neighbours, "accountant": ledger.accountant,
        "epsilon_spent": ledger.epsilon_spent, "epsilon_exact": ledger.epsilon_exact,
        "noise_multiplier": ledger.spends[-1].noise_multiplier if ledger.spends else 0.0,
        "dp_steps": getattr(ledger.spends[-1], "steps", None) if ledger.spends else None,
        "logreg": logreg_acc(x, y, data.test_x, data.test_y),
    }  # fmt: skip
    row["cnn"] = cnn_acc(x, y, data.test_x, data.test_y)
    row["eval_s"] = round(time.perf_counter() - t1, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run_dir / "grid.npz", x=x[::200][:100], y=y[::200][:100])


if __name__ == "__main__":
    main()

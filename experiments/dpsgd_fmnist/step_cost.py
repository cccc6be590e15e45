"""Per-step cost of the discriminator update with DP (Opacus) against the same update without.

Both modules are built from the same method config and the same initial weights; each timed
step is ``GANModule.d_step`` on a Poisson batch of the real data plus a fixed-size fake batch
(identical work except per-sample gradients, clipping, noise and recording the step). The
generator step is timed too (it is the same in both). Writes a JSON with medians.

Usage: python experiments/dpsgd_fmnist/step_cost.py [--steps 30] [--out results/...json]
         [key=value ...]   (method options, e.g. batch_size=512 d_width=32)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from dpsynth.data.fashion_mnist import load_fashion_mnist
from dpsynth.methods.dpsgd import DPSGDGAN, GANModule
from dpsynth.records import write_json


def build(method: DPSGDGAN, data, private: bool, seed: int = 0) -> GANModule:
    torch.manual_seed(seed)
    gen, disc, code_dim = method.make_networks(data.spec)
    module = GANModule(
        gen, copy.deepcopy(disc),
        torch.from_numpy(data.train_x), torch.from_numpy(data.train_y),
        [1 / data.spec.num_classes] * data.spec.num_classes,
        code_dim=code_dim, batch_size=method.batch_size, lr_d=method.lr_d, lr_g=method.lr_g,
        betas=method.betas, private=private, noise_multiplier=1.0,
        max_grad_norm=method.max_grad_norm,
        accountant=None,  # a private module records its steps in a StepHistory
        budget_steps=10**9,
    )  # fmt: skip
    module.configure_optimizers()
    return module


def time_steps(module: GANModule, steps: int) -> dict[str, float]:
    """Median seconds of the discriminator update and of the rest of a training step."""
    d_times, g_times = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = torch.as_tensor(next(iter(module.sampler)), dtype=torch.long)
        x_fake, y_fake = module.generate(module.batch_size)
        t1 = time.perf_counter()
        module.d_step(module._x[idx], module._y[idx], x_fake.detach(), y_fake)
        t2 = time.perf_counter()
        _, grads = module.generator_gradients(x_fake, y_fake)
        for p, g in zip(module.generator.parameters(), grads, strict=True):
            p.grad = g
        module._g_opt.step()
        t3 = time.perf_counter()
        d_times.append(t2 - t1)
        g_times.append((t1 - t0) + (t3 - t2))
    skip = min(3, steps // 3)  # warm-up
    return {
        "d_step_median_s": statistics.median(d_times[skip:]),
        "g_step_median_s": statistics.median(g_times[skip:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", default="")
    ap.add_argument("--out", default="results/dpsgd_fmnist/step_cost.json")
    ap.add_argument("options", nargs="*", help="method options key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    opts = {}
    for kv in args.options:
        k, v = kv.split("=", 1)
        opts[k] = json.loads(v) if v[:1].isdigit() or v in ("true", "false", "null") else v
    method = DPSGDGAN(**opts)
    data = load_fashion_mnist(args.root)
    rows = {}
    # interleave the two measurements so machine-load drift hits both alike
    for private in (True, False, True, False):
        key = "dp" if private else "non_dp"
        r = time_steps(build(method, data, private), args.steps)
        rows.setdefault(key, []).append(r)
    out = {
        key: {m: statistics.median(r[m] for r in runs) for m in runs[0]}
        for key, runs in rows.items()
    }
    out["ratio_d_step"] = out["dp"]["d_step_median_s"] / out["non_dp"]["d_step_median_s"]
    out["ratio_full_step"] = (out["dp"]["d_step_median_s"] + out["dp"]["g_step_median_s"]) / (
        out["non_dp"]["d_step_median_s"] + out["non_dp"]["g_step_median_s"]
    )
    out.update(threads=args.threads, steps=args.steps, method_options=opts,
               batch_size=method.batch_size)  # fmt: skip
    write_json(Path(args.out), out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""The arithmetic floor of the PEARL preset's training on this machine.

Counts the floating-point operations of one generator step and one critic step of the
Fashion-MNIST preset (``conf/method/pearl.yaml``: k = 1,500 frequencies, batch 100, the
reference generator, a critic step every 5th step with its effective-frequency floor) with
torch's own counter (``torch.utils.flop_counter.FlopCounterMode``: matrix products and
convolutions, forward and backward), by running the training module's real code: its batch
generation, its CF loss and backward, the critic's objective, backward and projection. Then

    floor = steps × (generator-step FLOPs + critic-step FLOPs / critic_every) / R,

with R this machine's 2048² float32 matrix-product throughput (its best case: the small,
skinny products of a step run slower). No fp32 implementation of this algorithm on this
machine trains faster than the floor; it is what the speed target is checked against.
Elementwise work (cos, sin, BatchNorm, Adam) is not counted, so the floor is optimistic.

    python experiments/pearl_fmnist/flops.py            # prints the counts and the floor
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[2]
PRESET = OmegaConf.load(ROOT / "conf/method/pearl.yaml")
STEPS, CRITIC_EVERY = int(PRESET.steps), int(PRESET.critic_every)


def preset_module(sigma0_sq: float = 135.0, seed: int = 0):  # noqa: ANN201 (a LightningModule)
    """The preset's training module on Fashion-MNIST's shapes (1×28×28, 10 classes), built by
    the method's own code from ``conf/method/pearl.yaml``; the target is a random stand-in of
    the release's shape (the FLOP count does not depend on its values)."""
    from hydra.utils import instantiate

    from dpsynth.data.base import DataSpec
    from dpsynth.methods.embedding import draw_frequencies
    from dpsynth.methods.oneshot import EmbeddingMatcher
    from dpsynth.methods.pearl import FrequencyCritic

    torch.manual_seed(seed)
    cfg = PRESET
    method = instantiate(cfg)
    spec = DataSpec("fashion_mnist", "image", (1, 28, 28), 10, tuple("0123456789"), balanced=True)
    generator, code_dim = method.make_generator(spec)
    k = int(cfg.num_features)
    freqs = draw_frequencies(k, spec.dim, sigma0_sq, seed)  # (k, d)
    return EmbeddingMatcher(
        generator,
        freqs,
        1e-3 * torch.randn(2 * k, spec.num_classes),  # (2k, C)
        torch.full((spec.num_classes,), 1.0 / spec.num_classes),
        code_dim=code_dim,
        batch_size=int(cfg.batch_size),
        lr=float(cfg.lr),
        max_steps=STEPS,
        scheduler=str(cfg.scheduler),
        loss_scale=float(cfg.loss_scale),
        critic=FrequencyCritic(spec.dim, sigma0_sq),
        critic_lr=float(cfg.critic_lr),
        critic_every=CRITIC_EVERY,
        critic_tau=1e-6,
        critic_min_ess=float(cfg.critic_min_ess),
        label_sampling=str(cfg.label_sampling),
    )


def step_flops(module) -> dict[str, float]:  # noqa: ANN001
    """FLOPs of one generator step and of one critic step (the projection's bisection at its
    worst case: the floor binds, 12 halvings)."""
    with FlopCounterMode(display=False) as count:
        x, y = module.generate()
        loss = module.cf_loss(x, y, module.weights().detach())
        loss.backward()
    gen = count.get_total_flops()
    # A critic move large enough that the floor binds, so the projection bisects.
    with torch.no_grad():
        module.critic.precision.mul_(0.0).add_(1e-3 * module.critic.sigma0_sq)
    with FlopCounterMode(display=False) as count:
        with torch.no_grad():
            xc, yc = module.generate(module.critic_rng())
        (-module.critic_objective(xc, yc)).backward()
        module.critic.project_(module.freqs_sq, module.critic_min_ess)
    return {"generator_step": float(gen), "critic_step": float(count.get_total_flops())}


def floor_seconds(flops: dict[str, float], steps: int, critic_every: int, gflops: float) -> float:
    """Training time if every counted FLOP ran at ``gflops``."""
    per_step = flops["generator_step"] + flops["critic_step"] / critic_every
    return steps * per_step / (gflops * 1e9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gflops", type=float, help="matrix-product throughput (default: measure)")
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args()
    module = preset_module()
    flops = step_flops(module)
    if args.gflops is None:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from speed_table import matmul_gflops

        args.gflops = matmul_gflops()
    floor = floor_seconds(flops, STEPS, CRITIC_EVERY, args.gflops)
    out = {
        **flops,
        "steps": STEPS,
        "critic_every": CRITIC_EVERY,
        "matmul_gflops": args.gflops,
        "train_floor_s": floor,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

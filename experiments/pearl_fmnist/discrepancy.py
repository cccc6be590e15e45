"""The discrepancy principle on finished runs: how far each generator ended from its release, in
units of the release's noise energy (``fit/discrepancy_ratio``, src/dpsynth/methods/oneshot.py).

Morozov's discrepancy principle (1966) stops an iterative fit to noisy data once the residual
reaches the noise level: ratio ≤ τ with τ ≥ 1. Runs that finished before the diagnostic existed
(the step-selection candidates of results/pearl_fmnist/selection_steps/) kept each member's last
checkpoint and their release; this script reads those two and nothing else (post-processing),
and prints one row per run: the steps trained, the members' ratios and the run's validation or
test accuracy.

    python experiments/pearl_fmnist/discrepancy.py RUN_DIR [RUN_DIR ...] [--csv OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from dpsynth.data.base import DataSpec
from dpsynth.methods.embedding import draw_frequencies
from dpsynth.methods.oneshot import (
    RUN_RELEASE,
    EmbeddingMethod,
    discrepancy_ratio,
    embedding_noise_std,
    generated_class_means,
    member_seed,
    released_class_weights,
)
from dpsynth.pipeline import build_method
from dpsynth.privacy.release import ReleaseCache


def member_checkpoints(run: Path) -> list[Path]:
    """Member 0's checkpoint in the run folder, member j's under ensemble/member{j}."""
    found = [run / "checkpoints" / "last.ckpt"]
    found += sorted((run / "ensemble").glob("member*/checkpoints/last.ckpt"))
    return [p for p in found if p.exists()]


def run_row(run: Path) -> dict[str, float | str]:
    config = OmegaConf.create(json.loads((run / "config.json").read_text()))
    metrics = json.loads((run / "metrics.json").read_text())
    method = build_method(config)
    if not isinstance(method, EmbeddingMethod):
        raise SystemExit(f"{run}: method {method.name} is not a CF-embedding method")
    # The run's own release.npz, read as the run itself reads it on a resume.
    release = ReleaseCache(run).load(Path(RUN_RELEASE).stem)
    if release is None:
        raise SystemExit(f"{run}: no {RUN_RELEASE} (a run folder of a CF-embedding method)")
    pub = release.public
    c = int(pub["num_classes"])
    with np.load(run / "samples.npz") as z:  # the image shape, from the run's own samples
        shape = tuple(z["x"].shape[1:])
    spec = DataSpec("run", "image", shape, c, tuple(str(i) for i in range(c)))
    freqs = draw_frequencies(pub["num_features"], pub["dim"], pub["sigma0_sq"], pub["freq_seed"])
    target = np.asarray(release["embedding"], dtype=np.float64)  # (2k, C)
    weights = released_class_weights(release, c)
    noise_std = embedding_noise_std(release)
    ratios, steps = [], None
    for j, ckpt in enumerate(member_checkpoints(run)):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        steps = int(state["global_step"])
        generator, code_dim = method.make_generator(spec)
        prefix = "generator_ema." if method.g_ema else "generator."
        generator.load_state_dict(
            {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
        )
        means, var = generated_class_means(
            generator,
            code_dim,
            freqs,
            c,
            method.discrepancy_samples_per_class,
            seed=member_seed(int(config.seed), j) + 2,
        )
        ratios.append(discrepancy_ratio(target, means, var, weights, noise_std))
    accuracy = {k: v for k, v in metrics.get("metrics", {}).items() if k.startswith("eval/acc_")}
    return {
        "run": str(run),
        "dataset": metrics.get("dataset", ""),
        "epsilon": float(config.privacy.epsilon),
        "seed": int(config.seed),
        "steps": steps,
        "members": len(ratios),
        "ratio_mean": float(np.mean(ratios)),
        "ratio_min": float(np.min(ratios)),
        "ratio_max": float(np.max(ratios)),
        "evaluated_on": "validation" if metrics.get("tune") else "test",
        **accuracy,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--csv", type=Path, help="also write the rows here")
    a = p.parse_args()
    rows = pd.DataFrame([run_row(r) for r in a.runs])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(rows.drop(columns="run").round(3).to_string(index=False))
    if a.csv:
        a.csv.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()

"""Median stage timings and peak memory of the PEARL preset runs written by ``speed.sh``.

Compares with the authors' image script on the same 2-core machines (medians of 3 seeds,
../shared/REFERENCE.md): release 7.5 s, 3000 generator steps 132 s, 60k samples 2.6 s, total
146 s, peak RSS 1.4 GB, logistic regression 73.1 ± 1.3. Those machines vary: REFERENCE.md's
ran a 2048² float32 matrix product at 327 GFLOP/s, and the same code's generator step has taken
16 ms on one and 34 ms on another. So the table also records this machine's matrix-product
throughput, measured when the table is made (right after the runs, on the same idle machine),
beside REFERENCE.md's: a ratio against the authors' timings is only as good as that match.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch
from flops import CRITIC_EVERY, STEPS, floor_seconds, preset_module, step_flops

from dpsynth.config import trainer_precision

AUTHORS = {"release": 7.5, "train": 132.0, "sample": 2.6, "work": 146.0, "rss_gb": 1.4}
REFERENCE_GFLOPS = 327.0  # REFERENCE.md: the machine the authors' timings were taken on


TRAINERS = {"32-true": "trainer=default", "bf16-mixed": "trainer=bf16"}  # precision → row


def run_row(r: dict) -> dict:
    """One run's stage seconds, memory and accuracy."""
    t, mem = r["timings"], r["peak_rss_mb_by_stage"]
    return {
        "seed": r["seed"],
        "release": t["release"],
        "train": t["train"],
        "sample": t["sample"],
        "work": t["release"] + t["train"] + t["sample"],
        "total_with_eval": t["total"],
        "rss_gb": mem["sample"] / 1024,  # peak through release + training + sampling
        "rss_gb_with_eval": r["peak_rss_mb"] / 1024,
        "acc_logreg": r["metrics"]["eval/acc_logreg"],
        "acc_cnn": r["metrics"].get("eval/acc_cnn", float("nan")),
        "epsilon_spent": r["privacy"]["epsilon_spent"],
    }


def load_runs(root: Path, epsilon: float) -> dict[str, list[dict]]:
    """Completed PEARL runs at ``epsilon`` under ``root``, grouped by trainer precision (read
    from each run's config.json)."""
    groups: dict[str, list[dict]] = {}
    for path in sorted(root.glob("**/metrics.json")):
        r = json.loads(path.read_text())
        if not (
            r["status"] == "completed"
            and r["method"] == "pearl"
            and abs(r["privacy"]["epsilon"] - epsilon) < 1e-9
        ):
            continue
        config = json.loads((path.parent / "config.json").read_text())
        groups.setdefault(trainer_precision(config), []).append(run_row(r))
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", type=Path, help="folder with one sub-folder per run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epsilon", type=float, default=1.0, help="runs at this ε only")
    args = ap.parse_args()
    groups = load_runs(args.runs, args.epsilon)
    if not groups:
        raise SystemExit(f"no completed metrics.json under {args.runs}")
    med = {
        prec: {k: statistics.median(row[k] for row in rows) for k in rows[0] if k != "seed"}
        for prec, rows in groups.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    gflops = matmul_gflops()
    gflops_bf16 = matmul_gflops(dtype=torch.bfloat16)
    flops = step_flops(preset_module())  # the arithmetic floor (flops.py), same machine
    floor = floor_seconds(flops, STEPS, CRITIC_EVERY, gflops)
    floor_bf16 = floor_seconds(flops, STEPS, CRITIC_EVERY, gflops_bf16)
    total_tflop = floor * gflops / 1e3  # the counted work: floor × rate
    summary = {
        "runs": groups,
        "median": med,
        "authors": AUTHORS,
        "machine": _machine(),
        "matmul_gflops": gflops,
        "matmul_gflops_bf16": gflops_bf16,
        "reference_matmul_gflops": REFERENCE_GFLOPS,
        "flops": flops,
        "train_floor_s": floor,
        "train_floor_bf16_s": floor_bf16,
        "reference_train_floor_s": floor * gflops / REFERENCE_GFLOPS,
    }
    (args.out / "speed.json").write_text(json.dumps(summary, indent=2))
    n = max(len(rows) for rows in groups.values())
    lines = [
        f"# PEARL preset speed, Fashion-MNIST, ε = 1 ({n} seeds, medians; {_machine()})",
        "",
        "| | release s | train s (3000 steps) | 60k samples s | release+train+sample s "
        "| peak RSS GB | LogReg acc |",
        "|---|---|---|---|---|---|---|",
        f"| authors' code (REFERENCE.md) | {AUTHORS['release']} | {AUTHORS['train']} "
        f"| {AUTHORS['sample']} | {AUTHORS['work']} | {AUTHORS['rss_gb']} | 73.1 ± 1.3 |",
    ]
    for prec in sorted(groups, key=lambda p: list(TRAINERS).index(p) if p in TRAINERS else 9):
        m, acc = med[prec], [row["acc_logreg"] for row in groups[prec]]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        name = f"dpsynth `method=pearl {TRAINERS.get(prec, 'trainer.precision=' + prec)}`"
        lines += [
            f"| {name} | {m['release']:.2f} | {m['train']:.1f} | {m['sample']:.2f} "
            f"| {m['work']:.1f} | {m['rss_gb']:.2f} | {statistics.mean(acc):.1f} ± {sd:.1f} |",
            f"| ratio (authors / {prec}) | {AUTHORS['release'] / m['release']:.1f}× "
            f"| {AUTHORS['train'] / m['train']:.2f}× | {AUTHORS['sample'] / m['sample']:.2f}× "
            f"| {AUTHORS['work'] / m['work']:.2f}× | | |",
        ]
    lines += [
        "",
        "LogReg acc is the mean ± sd over the seeds. Whole run including loading, the "
        "classifier and writing outputs (median): "
        + ", ".join(f"{p} {med[p]['total_with_eval']:.0f} s" for p in med)
        + "; peak RSS with evaluation: "
        + ", ".join(f"{p} {med[p]['rss_gb_with_eval']:.2f} GB" for p in med)
        + ".",
        "Peak RSS through sampling is the kernel's high-water mark after the sampling stage "
        "(`peak_rss_mb_by_stage.sample` in metrics.json); torch + Lightning alone take ~0.85 GB.",
        "",
        f"This machine's 2048² matrix product, measured when the table was made: "
        f"{gflops:.0f} GFLOP/s in float32, {gflops_bf16:.0f} GFLOP/s in bfloat16; "
        f"REFERENCE.md's machine (the authors' timings): {REFERENCE_GFLOPS:.0f} GFLOP/s in "
        "float32. Where the two differ, the ratio rows compare unlike machines; compare the "
        "code with itself on one machine instead.",
        "",
        f"Arithmetic floor (`flops.py`, torch's FLOP counter on the preset's own training code): "
        f"{flops['generator_step'] / 1e9:.3f} GFLOP a generator step, "
        f"{flops['critic_step'] / 1e9:.3f} GFLOP a critic step (every {CRITIC_EVERY}th), so "
        f"{STEPS} steps are {total_tflop:.2f} TFLOP: **{floor:.1f} s of training at this "
        f"machine's float32 matrix-product rate, {floor_bf16:.1f} s at its bfloat16 rate** "
        f"({floor * gflops / REFERENCE_GFLOPS:.1f} s at REFERENCE.md's float32 rate). "
        "Measured: "
        + ", ".join(
            f"{p} {med[p]['train']:.1f} s"
            + (
                f" ({100 * floor / med[p]['train']:.0f}% of the float32 rate)"
                if p == "32-true"
                else f" ({100 * floor_bf16 / med[p]['train']:.0f}% of the bfloat16 rate)"
            )
            for p in med
        )
        + ".",
    ]
    (args.out / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def matmul_gflops(n: int = 2048, repeats: int = 20, dtype: torch.dtype = torch.float32) -> float:
    """Throughput of one n×n matrix product in ``dtype`` with torch's default threads
    (GFLOP/s), the best of three timings of ``repeats`` products: how fast this machine is now."""
    import time

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - t) / repeats)
    return 2 * n**3 / best / 1e9


def _machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or 'cpu'}"


if __name__ == "__main__":
    main()

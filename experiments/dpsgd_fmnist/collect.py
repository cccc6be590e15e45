"""Gather the benchmark's run folders and the step-cost measurement into one table.

Reads ``<runs>/eps<ε>/metrics.json`` (written by the dpsynth CLI) and
``results/dpsgd_fmnist/step_cost.json``; writes ``results/dpsgd_fmnist/summary.json`` and
``summary.md``: accuracy (logistic regression, MLP, CNN), FID, the neighbour relation, ε spent
(by the run's accountant) and ε exact (PLD), DP steps, σ, and wall
time per stage for each ε, plus the DP/non-DP per-step cost ratio.

Usage: python experiments/dpsgd_fmnist/collect.py [--runs outputs/dpsgd_fmnist]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dpsynth.records import write_json

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {10.0: (49.0, 70.0), 1.0: (18.0, 60.0)}  # CNN accuracy: required, aimed at
# the DP-SGD steps' Spend.mechanism (the second: runs made before issue 11's recalibration)
SGD_MECHANISMS = ("poisson_gaussian", "dpsgd_poisson_gaussian")


def row(run: Path) -> dict:
    rec = json.loads((run / "metrics.json").read_text())
    priv, m = rec["privacy"], rec["metrics"]
    sgd = next((r for r in priv.get("releases", []) if r.get("mechanism") in SGD_MECHANISMS), {})
    eps = float(priv["epsilon"])
    need, aim = TARGETS.get(eps, (None, None))
    return {
        "run": str(run),
        "status": rec["status"],
        "epsilon": eps,
        "epsilon_spent": priv.get("epsilon_spent"),
        "epsilon_exact": priv.get("epsilon_exact"),
        "accountant": priv.get("accountant"),
        "neighbours": priv.get("neighbours", "add_remove (Opacus, before issue 11)"),
        "dp_steps": sgd.get("steps"),
        "noise_multiplier": sgd.get("noise_multiplier"),
        "sample_rate": sgd.get("sample_rate"),
        "acc_logreg": m.get("eval/acc_logreg"),
        "acc_mlp": m.get("eval/acc_mlp"),
        "acc_cnn": m.get("eval/acc_cnn"),
        "fid": m.get("eval/fid"),
        "cnn_required": need,
        "cnn_aim": aim,
        "timings_s": rec.get("timings", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "dpsgd_fmnist"))
    ap.add_argument("--out", default=str(ROOT / "results" / "dpsgd_fmnist"))
    args = ap.parse_args()
    runs = sorted(p.parent for p in Path(args.runs).glob("*/metrics.json"))
    rows = [row(r) for r in runs]
    out = Path(args.out)
    cost_path = out / "step_cost.json"
    cost = json.loads(cost_path.read_text()) if cost_path.exists() else None
    write_json(out / "summary.json", {"runs": rows, "step_cost": cost})
    lines = [
        "| ε | neighbours | ε spent (accountant) | ε exact (PLD) | DP steps | σ | acc logreg "
        "| acc MLP | acc CNN (need / aim) | FID | train s | sample s | evaluate s | total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, p=1: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in sorted(rows, key=lambda r: -r["epsilon"]):
        t = r["timings_s"]
        lines.append(
            f"| {r['epsilon']:g} | {r['neighbours']} | {fmt(r['epsilon_spent'], 3)} "
            f"({r['accountant']}) | {fmt(r['epsilon_exact'], 3)} | {r['dp_steps']} "
            f"| {fmt(r['noise_multiplier'], 3)} | {fmt(r['acc_logreg'])} | {fmt(r['acc_mlp'])} "
            f"| {fmt(r['acc_cnn'])} ({fmt(r['cnn_required'], 0)} / {fmt(r['cnn_aim'], 0)}) "
            f"| {fmt(r['fid'])} | {fmt(t.get('train'), 0)} | {fmt(t.get('sample'), 0)} "
            f"| {fmt(t.get('evaluate'), 0)} | {fmt(t.get('total'), 0)} |"
        )
    if cost:
        lines += [
            "",
            f"Discriminator step, batch {cost['batch_size']}, {cost['threads']} thread(s), "
            f"median of {cost['steps']} steps: DP (Opacus) {cost['dp']['d_step_median_s']:.3f} s, "
            f"non-DP {cost['non_dp']['d_step_median_s']:.3f} s → ratio "
            f"**{cost['ratio_d_step']:.2f}×**; whole training step (with the generator update) "
            f"{cost['ratio_full_step']:.2f}×.",
        ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Accuracy of the one-shot methods at ε = 1 before and after the yardstick (issue 11).

Before: `results/pearl_fmnist/runs` (RDP, embedding and proportions as two releases, the
private-data σ0² heuristic). After: the runs given on the command line (exact PLD, one joint
release, DP σ0² paid from the budget). Fashion-MNIST, 60k synthetic images, classifiers tested
on the real test split; mean ± std over the seeds found.

    python experiments/yardstick/accuracy_effect.py outputs/multirun/fmnist_table
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ("eval/acc_logreg", "eval/acc_cnn")
BEFORE = Path(__file__).resolve().parents[2] / "results" / "pearl_fmnist" / "runs"


def collect(root: Path, epsilon: float) -> dict[tuple[str, str], list[float]]:
    """(method, metric) → values over the completed runs at ``epsilon`` below ``root``."""
    out: dict[tuple[str, str], list[float]] = {}
    for path in sorted(root.rglob("metrics.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "completed" or rec["privacy"]["epsilon"] != epsilon:
            continue
        for metric in METRICS:
            if metric in rec["metrics"]:
                out.setdefault((rec["method"], metric), []).append(rec["metrics"][metric])
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.1f}{sd} (n={len(values)})"


def main() -> None:
    after_root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/multirun/fmnist_table")
    before, after = collect(BEFORE, 1.0), collect(after_root, 1.0)
    print(
        "| method | metric | before (RDP, separate, σ0² heuristic) | after (PLD, joint, DP σ0²) |"
    )
    print("|---|---|---|---|")
    for method in ("pearl", "dpmerf"):
        for metric in METRICS:
            key = (method, metric)
            print(
                f"| {method} | {metric} | {fmt(before.get(key, []))} | {fmt(after.get(key, []))} |"
            )


if __name__ == "__main__":
    main()

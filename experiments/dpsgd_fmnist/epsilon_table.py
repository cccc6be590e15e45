"""ε of the DP-SGD runs under both neighbour relations, before and after issue 11's recalibration.

Before: the committed runs (results/dpsgd_fmnist) were calibrated by Opacus under add/remove
(σ 1.1364 for "ε = 1", 0.5051 for "ε = 10"; q = 256/60000, T = 3000, δ = 1e-5). After: σ
calibrated by ``dpsynth.privacy.accounting.calibrate_sgd`` under replace-one with PLD (the
harness default) — and, for reference, under add/remove. Every ε is by
``dpsynth.privacy.accounting.epsilon_spent``. Prints a markdown table (about 20 s on one core).

Usage: python experiments/dpsgd_fmnist/epsilon_table.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from dpsynth.privacy.accounting import SubsampledGaussian, calibrate_sgd, epsilon_spent

Q, T, DELTA = 256 / 60000, 3000, 1e-5
COMMITTED = {1.0: 1.1364043556052879, 10.0: 0.5051456712249138}  # metrics_eps{1,10}.json


def epsilons(sigma: float) -> dict[str, float]:
    ev = [SubsampledGaussian(sigma, Q, T)]
    return {
        "replace_one_pld": epsilon_spent(ev, delta=DELTA, neighbours="replace_one"),
        "add_remove_pld": epsilon_spent(ev, delta=DELTA, neighbours="add_remove"),
        "add_remove_rdp": epsilon_spent(ev, delta=DELTA, neighbours="add_remove", accountant="rdp"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    rows = []
    for target, sigma in COMMITTED.items():
        rows.append({"target": target, "sigma": sigma, "how": "committed (Opacus PRV, add/remove)"})
    for target in COMMITTED:
        for nb in ("replace_one", "add_remove"):
            sigma = calibrate_sgd(
                epsilon=target, delta=DELTA, sample_rate=Q, steps=T, neighbours=nb
            )
            rows.append({"target": target, "sigma": sigma, "how": f"calibrate_sgd {nb}, pld"})
    for r in rows:
        r.update(epsilons(r["sigma"]))
    print(
        "| target ε | σ from | σ | ε replace-one (PLD) | ε add/remove (PLD) | ε add/remove (RDP) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']:g} | {r['how']} | {r['sigma']:.4f} | {r['replace_one_pld']:.3f} "
            f"| {r['add_remove_pld']:.3f} | {r['add_remove_rdp']:.3f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"q": Q, "steps": T, "delta": DELTA, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

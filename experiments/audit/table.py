"""Collect dpsynth-audit JSON results into results/audit/audit.json and audit.md.

Usage: python experiments/audit/table.py --out results/audit [--keep OLD.json] RUN.json ...
(rows keep the order given; experiments/audit/run.sh produces the inputs). ``--keep`` merges
the rows of an earlier audit.json of the kinds (one-shot, DP-SGD step, DP-SGD one run) that
are not re-run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy

ONESHOT_HEADER = (
    "| method | released statistics (k, d, n) | neighbours | planted bug | claimed ε "
    "| ledger ε (release's own) | canary (μ / accountant's) | **audited ε lower bound** "
    "| known-shift GDP / empirical GDP / Clopper–Pearson | score std ÷ ledger's | cache hit "
    "spends nothing | releases / dataset | verdict |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
STEP_HEADER = (
    "| run ε (n, q, T) | planted bug | σ | **claimed one-step ε** | optimiser's σ gives "
    "| **audited ε lower bound** | exact ε of a correct step (μ = 1/σ) | measured μ "
    "| steps / dataset | steps/s | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
ONERUN_HEADER = (
    "| run ε (n, q, T) | planted bug | σ | audited q, T, records | canaries (+1) "
    "| **claimed ε** | best guesses (correct / made) | **audited ε lower bound** | steps/s "
    "| verdict |\n|---|---|---|---|---|---|---|---|---|---|"
)


def kind(r: dict[str, Any]) -> str:
    return str(r.get("audit", "old"))


def _verdict(r: dict[str, Any]) -> str:
    return "**VIOLATION**" if r["violation"] else "consistent"


def _oneshot_row(r: dict[str, Any]) -> str:
    m = r["mechanism"]
    stats = " + ".join(
        f"{s['name']} {tuple(s['shape'])} (Δ₂ {s['sensitivity_declared']:.3g})"
        for s in m["statistics"]
    )
    ks, em, t = r["known_shift"], r["empirical"], r["test"]
    return (
        f"| {r['method']} | {stats} (k {m['num_features']}, d {m['dim']}, n {m['records']}) "
        f"| {r['neighbours']} | {r['planted_bug']} | {r['epsilon']:g} "
        f"| {r['ledger_epsilon_spent']:.3f} ({r['release_epsilon']:.3f}) "
        f"| {r['canary']} ({r['canary_tightness']:.3f}) | **{r['epsilon_lower_bound']:.3f}** "
        f"| {ks['epsilon_lower_bound']:.3f} / {em['epsilon_lower_bound']:.3f} / "
        f"{t['epsilon_lower_bound']:.3f} | {ks['std']:.3f} | {r['cache']['ok']} "
        f"| {r['trials']:.0e} | {_verdict(r)} |"
    )


def _step_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['epsilon']:g} ({r['train_size']:,}, {r['run_sample_rate']:.3g}, {r['run_steps']}) "
        f"| {r['planted_bug']} | {r['noise_multiplier']:.4f} | **{r['claimed_epsilon']:.3f}** "
        f"| {r['ledger_epsilon']:.3f} | **{r['epsilon_lower_bound']:.3f}** "
        f"| {r['exact_epsilon_of_canary']:.3f} ({r['separation_mu']:.3f}) "
        f"| {r['empirical_mu']:.3f} | {r['trials']:.0e} | {r['trials_per_second']:.0f} "
        f"| {_verdict(r)} |"
    )


def _onerun_row(r: dict[str, Any]) -> str:
    b = r["best"]
    claim = min(r["claimed_epsilon"], r["ledger_epsilon"])
    return (
        f"| {r['epsilon']:g} ({r['train_size']:,}, {r['run_sample_rate']:.3g}, {r['run_steps']}) "
        f"| {r['planted_bug']} | {r['noise_multiplier']:.4f} "
        f"| {r['audited_sample_rate']:.4g}, {r['audited_steps']}, {r['records']:,} "
        f"| {r['canaries']} ({r['included']}) | **{claim:.3f}** "
        f"| {b['correct']} / {b['guesses']} (k = {b['k']}) | **{r['epsilon_lower_bound']:.3f}** "
        f"| {r['steps_per_second']:.0f} | {_verdict(r)} |"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep", type=Path, default=None, help="earlier audit.json to merge")
    p.add_argument("runs", nargs="*", type=Path)
    args = p.parse_args(argv)
    new = [json.loads(path.read_text()) for path in args.runs]
    rows = list(new)
    if args.keep is not None:
        old = json.loads(args.keep.read_text())["rows"]
        rerun = {kind(r) for r in new}
        # rows of the current format only (an audit.json of the earlier, toy-sized audit has
        # other fields: its rows are dropped, not mixed in)
        rows = [r for r in old if "audit" in r and kind(r) not in rerun] + new
    oneshot = [r for r in rows if kind(r) == "oneshot"]
    steps = [r for r in rows if kind(r) == "dpsgd-step"]
    onerun = [r for r in rows if kind(r) == "dpsgd-one-run"]
    meta = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "experiments/audit/run.sh",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = [
        "# Empirical privacy audit of the one-shot releases and of DP-SGD",
        "",
        f"Generated {meta['generated']} by `experiments/audit/run.sh` "
        "(see experiments/audit/README.md for the method and how to read this).",
        "",
    ]
    if oneshot:
        f = oneshot[0]
        md += [
            "## One-shot releases at production shapes",
            "",
            f"The presets' k on generated 28×28 Fashion-MNIST-format files (IDX, read by the "
            f"real loader), `method.release` with OS-entropy noise and a real release cache; "
            f"δ = {f['delta']:g}, accountant {f['accountant']}; the three lower bounds hold "
            f"jointly with {f['confidence']:.0%} confidence. *Claimed ε*: the run's target; "
            "*ledger ε*: what the run's ledger records (the audited release's own entry in "
            "parentheses: the DP σ0² estimate before it takes 5 % of the budget and is held "
            "fixed); *canary (μ / accountant's)*: how far the worst neighbour moves the release, "
            "as a fraction of what the ledger assumes (1: the claim is reachable). A violation "
            "is a lower bound above the audited release's claim, or a cache hit that spends.",
            "",
            "### Real release code",
            "",
            ONESHOT_HEADER,
            *(_oneshot_row(r) for r in oneshot if r["planted_bug"] == "none"),
            "",
            "### Planted bugs (self-test of the auditor)",
            "",
            "`noise-0.8` / `half-noise`: the noise drawn is 0.8 / 0.5 × the std the ledger "
            "records; `half-sensitivity`: every statistic declares half its L2 sensitivity. The "
            "ledger reports the promised ε in all three, wrongly.",
            "",
            ONESHOT_HEADER,
            *(_oneshot_row(r) for r in oneshot if r["planted_bug"] != "none"),
            "",
        ]
    if steps:
        md += [
            "## DP-SGD: one full-batch discriminator step",
            "",
            "One q = 1 step of the real `GANModule.real_gradients` (Opacus GradSampleModule + "
            "DPOptimizer, from `DPSGDGAN.make_module`) at the σ of the run in the first column "
            "(`conf/method/dpsgd.yaml`, n = 60,000, σ calibrated by dp-accounting under the "
            "run's relation); D = 7 records, D′ = D ∪ {crafted canary record}; claim: "
            "dp-accounting's add/remove ε of exactly one step at (σ, q = 1). Planted bugs: "
            "`no-clip`, `half-noise` (the optimiser gets σ/2), `half-sensitivity` (clip at 2C).",
            "",
            STEP_HEADER,
            *(_step_row(r) for r in steps),
            "",
        ]
    if onerun:
        md += [
            "## DP-SGD: whole runs, one-run audit (Steinke, Nasr, Jagielski 2023)",
            "",
            "One training run of the 28×28 image discriminator at the run's σ and Poisson rate "
            "q for T steps, m Dirac gradient canaries each +1 or −1 with probability ½ "
            "(replace-one: a canary or its mirror image), scored by their log-likelihood ratio "
            "over all privatised gradients; ε lower bound from the top-k / bottom-k guesses by "
            f"Theorem 5.2 at {onerun[0]['confidence']:.0%} confidence (Bonferroni over k).",
            "",
            ONERUN_HEADER,
            *(_onerun_row(r) for r in onerun),
            "",
        ]
    (args.out / "audit.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())

"""``dpsynth-audit``: the empirical privacy audit of one method at one ε, from the real configs.

    dpsynth-audit method=pearl privacy.epsilon=1                 # one-shot release, k = 1500
    dpsynth-audit method=dpmerf privacy=eps10 --json out.json    # k = 5000
    dpsynth-audit method=pearl privacy=eps1 --plant-bug noise-0.8   # self-test: exits 1
    dpsynth-audit method=dpsgd privacy.epsilon=10                # one full-batch DP-SGD step
    dpsynth-audit method=dpsgd privacy.epsilon=1 --one-run       # a whole run, 1000 canaries

Exit status: 0 when the lower bound is at most the claim, 1 when it exceeds it (or a cache hit
spent privacy), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpsynth.audit.common import (
    EXIT_USER_ERROR,
    EXIT_VIOLATION,
    compose_config,
    method_class,
)
from dpsynth.errors import ConfigError, DpsynthError


def _parser() -> argparse.ArgumentParser:
    from dpsynth.audit import dpsgd, oneshot

    p = argparse.ArgumentParser(
        prog="dpsynth-audit",
        description=(
            "Empirical lower bound on the ε a method's real code provides, beside the ε it "
            "claims. One-shot methods (PEARL, DP-MERF): many production releases on "
            "neighbouring datasets differing in a worst-case canary, at the preset's shapes. "
            "DP-SGD: one full-batch step, or (--one-run) a whole run with gradient canaries. "
            "Exit status: 0 consistent, 1 lower bound above the claim, 2 error."
        ),
        epilog="example: dpsynth-audit method=pearl privacy.epsilon=1",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=pearl privacy=eps1")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"releases (one-shot, default {oneshot.DEFAULT_TRIALS:,}) or steps (DP-SGD step, "
        f"default {dpsgd.DEFAULT_TRIALS:,}) per neighbouring dataset",
    )
    p.add_argument(
        "--records",
        type=int,
        default=None,
        help=f"records of the audit dataset (one-shot default {oneshot.DEFAULT_RECORDS}; DP-SGD "
        "step default 8)",
    )
    p.add_argument(
        "--features",
        type=int,
        default=None,
        help="one-shot: k frequencies (default: the preset's); DP-SGD step: record dimension "
        "(default 2)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=28,
        help="H = W of the generated images (one-shot, one-run; default 28: d = 784)",
    )
    p.add_argument("--classes", type=int, default=None, help="DP-SGD: labels (step 2, run 10)")
    p.add_argument(
        "--train-size",
        type=int,
        default=dpsgd.FASHION_MNIST_TRAIN,
        help="DP-SGD: n of the run whose σ, q, T are audited (default 60000, Fashion-MNIST)",
    )
    p.add_argument(
        "--one-run", action="store_true", help="DP-SGD: audit a whole run (Steinke et al. 2023)"
    )
    p.add_argument(
        "--canaries",
        type=int,
        default=dpsgd.DEFAULT_CANARIES,
        help=f"DP-SGD one run: m canaries (default {dpsgd.DEFAULT_CANARIES})",
    )
    p.add_argument("--steps", type=int, default=None, help="DP-SGD one run: T (default: the run's)")
    p.add_argument(
        "--selection-fraction",
        type=float,
        default=0.1,
        help="share of the trials that only choose the threshold (default 0.1)",
    )
    p.add_argument(
        "--confidence", type=float, default=0.95, help="confidence of the bound (default 0.95)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="one-shot: releases per call")
    p.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    p.add_argument(
        "--plant-bug",
        "--bug",
        choices=sorted({*oneshot.PLANTED_BUGS, *dpsgd.DPSGD_BUGS}),
        default="none",
        help="self-test: audit a deliberately broken mechanism",
    )
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    return p


def is_dpsgd(overrides: Sequence[str]) -> bool:
    """Whether the composed method is a DP-SGD method (audited by :mod:`dpsynth.audit.dpsgd`)."""
    from dpsynth.methods.dpsgd import DPSGDGAN

    target = method_class(compose_config(overrides, default_dataset="fashion_mnist"), overrides)
    return isinstance(target, type) and issubclass(target, DPSGDGAN)


def run(args: argparse.Namespace) -> Any:
    """The audit the parsed arguments ask for."""
    from dpsynth.audit import dpsgd, oneshot

    extra = {} if args.seed is None else {"seed": args.seed}
    if is_dpsgd(args.overrides):
        if args.one_run:
            return dpsgd.audit_one_run_from_config(
                args.overrides,
                train_size=args.train_size,
                canaries=args.canaries,
                steps=args.steps,
                image_size=args.image_size,
                classes=10 if args.classes is None else args.classes,
                confidence=args.confidence,
                planted=args.plant_bug,
                **extra,
            )
        return dpsgd.audit_dpsgd_from_config(
            args.overrides,
            train_size=args.train_size,
            records=8 if args.records is None else args.records,
            classes=2 if args.classes is None else args.classes,
            dim=2 if args.features is None else args.features,
            trials=dpsgd.DEFAULT_TRIALS if args.trials is None else args.trials,
            selection_fraction=args.selection_fraction,
            confidence=args.confidence,
            planted=args.plant_bug,
            **extra,
        )
    if args.plant_bug not in oneshot.PLANTED_BUGS:
        raise ConfigError(
            f"--plant-bug: got {args.plant_bug!r}; allowed for one-shot methods: "
            f"{', '.join(oneshot.PLANTED_BUGS)}. Use none for a real audit."
        )
    if args.one_run:
        raise ConfigError("--one-run: allowed for method=dpsgd only; drop it for this method.")
    return oneshot.audit_from_config(
        args.overrides,
        features=args.features,
        records=oneshot.DEFAULT_RECORDS if args.records is None else args.records,
        image_size=args.image_size,
        trials=oneshot.DEFAULT_TRIALS if args.trials is None else args.trials,
        selection_fraction=args.selection_fraction,
        confidence=args.confidence,
        batch_size=args.batch_size,
        planted=args.plant_bug,
        **extra,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``dpsynth-audit [overrides] [--trials T --plant-bug B --json PATH ...]``."""
    args = _parser().parse_args(argv)
    try:
        result = run(args)
    except DpsynthError as e:
        print(f"dpsynth-audit: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(result.summary())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.violation:
        sys.exit(EXIT_VIOLATION)


if __name__ == "__main__":
    main()

"""Private hyper-parameter selection: what tuning on the private data costs, and the noisy max.

A preset chosen by reading private data is itself a release. ``dpsynth-tune`` (private mode)
pays for it inside the target budget of the runs that use the winner:

* the budget (ε, δ) is one Gaussian multiplier m (``calibrate_gaussian``); Gaussian releases
  compose by adding 1/m_j² (Dong, Roth, Su, "Gaussian differential privacy", JRSS-B 2022), so
  a fraction ``tune_share`` of 1/m² goes to tuning and the rest to the final run's release;
* of the tuning units, ``selection_share`` pays one Gaussian noisy max over the candidates'
  validation scores and the rest is split equally among the distinct candidate releases
  (candidates that differ only in post-processing settings share one release);
* the final run starts its budget with every tuning spend already in it (its release takes
  what is left, :func:`dpsynth.privacy.accounting.remaining_multiplier`), so its ledger, by
  dp-accounting, is the whole pipeline.

The selection is report-noisy-max with Gaussian noise on the vector of *counts of correct
validation predictions* (one per candidate). All candidates are scored on the same validation
records, so one record (replace-one or add/remove) moves each count by at most 1 and the vector
by at most √K in L2: a Gaussian mechanism of multiplier m_sel, and the argmax is
post-processing. (The exponential mechanism or Papernot & Steinke's random-repetition tuning,
ICLR 2022, "Hyperparameter tuning with Renyi differential privacy", are alternatives; the
Gaussian keeps the whole pipeline one Gaussian composition that PLD accounts exactly.)
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dpsynth.errors import ConfigError, PrivacyError
from dpsynth.privacy.accounting import Gaussian, calibrate_gaussian, epsilon_spent
from dpsynth.privacy.release import PrivacySpec, Spend


@dataclass(frozen=True)
class TuningPlan:
    """How a target budget is split between tuning and the final run (units of 1/m²).

    Attributes:
        total: the target's Gaussian multiplier m.
        releases: number of distinct candidate releases R.
        release_multiplier: multiplier of each candidate release (m / √(units per release)).
        release_epsilon: the ε (at the target's δ) a candidate run is calibrated to, so that
            its budget yields ``release_multiplier``.
        selection_multiplier: the noisy max's multiplier (None in proxy mode).
        tune_share: fraction of 1/m² that tuning uses; the final release gets the rest.
    """

    total: float
    releases: int
    release_multiplier: float
    release_epsilon: float
    selection_multiplier: float
    tune_share: float


def plan_tuning(
    privacy: PrivacySpec, *, releases: int, tune_share: float, selection_share: float
) -> TuningPlan:
    """Split ``privacy``'s budget: ``tune_share`` of it for ``releases`` candidate releases and
    one noisy max (``selection_share`` of the tuning part); the final run gets the rest."""
    if not 0 < tune_share < 1:
        raise ConfigError(
            f"--tune-share: got {tune_share}; the fraction of the budget (in units of 1/m², "
            "Gaussian composition) spent on tuning must lie in (0, 1), e.g. 0.2."
        )
    if not 0 < selection_share < 1:
        raise ConfigError(
            f"--selection-share: got {selection_share}; the fraction of the tuning budget for "
            "the noisy max must lie in (0, 1), e.g. 0.1."
        )
    if releases < 1:
        raise ConfigError(f"releases: got {releases}; at least one candidate release.")
    delta = privacy.accounting_delta
    m = calibrate_gaussian(epsilon=privacy.epsilon, delta=delta, accountant=privacy.accountant)
    per_release = tune_share * (1 - selection_share) / releases
    m_rel = m / math.sqrt(per_release)
    eps_rel = epsilon_spent(
        [Gaussian(m_rel)], delta=delta, neighbours=privacy.neighbours, accountant=privacy.accountant
    )
    # A candidate run calibrates ε_rel back to ≈ m_rel (up to the bisection's tolerance); the
    # final run's release takes what its actual spends left, so the plan need not be exact.
    m_sel = m / math.sqrt(tune_share * selection_share)
    return TuningPlan(m, releases, m_rel, eps_rel, m_sel, tune_share)


def noisy_argmax(
    counts: Sequence[float],
    multiplier: float,
    *,
    statistic: str,
    rng: np.random.Generator | None = None,
) -> tuple[int, Spend]:
    """Gaussian report-noisy-max over ``counts`` (one per candidate, each of sensitivity 1).

    Privacy: the count vector has L2 sensitivity √K under replace-one and add/remove (every
    count is over the same records, one record moves each by ≤ 1); it gets N(0, (m √K)²) noise
    per entry from the OS entropy pool (``rng`` only in tests) and only the argmax leaves.
    Returns the winner's index and the ledger entry.
    """
    c = np.asarray(counts, dtype=np.float64)  # (K,)
    if c.ndim != 1 or len(c) < 1 or not np.all(np.isfinite(c)):
        raise PrivacyError(f"noisy_argmax: need a finite vector of counts, got {counts!r}.")
    if not (math.isfinite(multiplier) and multiplier > 0):
        raise PrivacyError(f"noisy_argmax: multiplier must be > 0, got {multiplier}.")
    sens = math.sqrt(len(c))
    std = multiplier * sens
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    winner = int(np.argmax(c + rng.normal(0.0, std, size=c.shape)))
    return winner, Spend("gaussian", statistic, multiplier, sens, std)

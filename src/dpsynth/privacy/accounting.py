"""Calibration and accounting of composed Gaussian releases, through dp-accounting.

This is the only module that maps (ε, δ) ↔ noise for one-shot releases. We never implement an
accountant: every ε here is computed by Google's ``dp_accounting`` (RDP by default, as in the
PEARL / DP-MERF papers; PLD selectable, which is tighter).

Reference (Liew et al., ICLR 2022; Harder et al., AISTATS 2021): two composed Gaussian releases
at δ = 1e-5 under RDP need noise multipliers 25.3 (ε 0.2), 5.72 (ε 1), 0.75 (ε 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import dp_accounting
from dp_accounting import pld, rdp

from dpsynth.errors import ConfigError, PrivacyError

ACCOUNTANTS = ("rdp", "pld")


def _fresh_accountant(accountant: str) -> Callable[[], dp_accounting.PrivacyAccountant]:
    if accountant == "rdp":
        return rdp.RdpAccountant
    if accountant == "pld":
        return pld.PLDAccountant
    raise ConfigError(
        f"privacy.accountant: got {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}. "
        "Set privacy.accountant=rdp (the papers' choice) or pld (tighter)."
    )


def _event(noise_multiplier: float, releases: int) -> dp_accounting.DpEvent:
    """``releases`` Gaussian mechanisms, each with std = noise_multiplier × its L2 sensitivity."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), releases
    )


def epsilon_spent(
    noise_multiplier: float, *, releases: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε actually spent by ``releases`` composed Gaussian releases at the given δ.

    Privacy: each release is a Gaussian mechanism whose noise std is
    ``noise_multiplier × Δ₂`` for its own L2 sensitivity Δ₂.
    """
    if releases == 0:
        return 0.0
    acc = _fresh_accountant(accountant)()
    acc.compose(_event(noise_multiplier, releases))
    return float(acc.get_epsilon(delta))


def calibrate_noise_multiplier(
    *, epsilon: float, delta: float, releases: int, accountant: str = "rdp"
) -> float:
    """Smallest Gaussian noise multiplier whose ``releases``-fold composition is (ε, δ)-DP.

    Returns σ such that adding N(0, (σ Δ₂)²) to each of the ``releases`` statistics (each
    with its own L2 sensitivity Δ₂) spends at most ``epsilon`` at ``delta``.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivacyError(
            f"privacy.epsilon: got {epsilon}; a Gaussian release needs a finite ε > 0."
        )
    if not 0 < delta < 1:
        raise PrivacyError(f"privacy.delta: got {delta}; allowed: 0 < δ < 1 (e.g. 1e-5).")
    if releases < 1:
        raise PrivacyError(f"releases: got {releases}; a calibration needs at least one release.")
    make = _fresh_accountant(accountant)
    # RDP is cheap at any σ, so it brackets the search; PLD (tighter, so σ_pld ≤ σ_rdp) would
    # allocate enormous grids at tiny σ and is searched only just below the RDP answer.
    bracket: dp_accounting.mechanism_calibration.BracketInterval
    bracket = dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)
    if accountant != "rdp":
        upper = calibrate_noise_multiplier(
            epsilon=epsilon, delta=delta, releases=releases, accountant="rdp"
        )
        bracket = dp_accounting.ExplicitBracketInterval(upper * 0.25, upper * 1.01)
    sigma = dp_accounting.calibrate_dp_mechanism(
        make, lambda s: _event(s, releases), epsilon, delta, bracket, tol=1e-5
    )
    spent = epsilon_spent(sigma, releases=releases, delta=delta, accountant=accountant)
    if spent > epsilon * (1 + 1e-9):  # calibrate_dp_mechanism returns the safe side; verify
        raise PrivacyError(
            f"calibration returned σ={sigma} spending ε={spent} > target {epsilon}; "
            "refusing to release. Report this as a bug."
        )
    return float(sigma)

"""Every ε ↔ noise mapping of the harness, one-shot releases and DP-SGD alike, via dp-accounting.

We never implement an accountant: each ε here is computed by Google's ``dp_accounting``, with
the PLD accountant (``pld``, the default: exact up to a pessimistic discretisation, so an
upper bound) or the RDP accountant (``rdp``, the PEARL / DP-MERF papers' choice, loose by
~9% of ε at ε = 1).

The neighbour relation (``privacy.neighbours``) is part of every guarantee:

* ``replace_one`` (default; the one-shot literature's relation, n public): D and D' differ in
  the value of one record.
* ``add_remove``: D' is D with one record added or removed (n itself is private).

How a mechanism meets the relation:

* :class:`Gaussian` — a Gaussian mechanism whose noise std is ``noise_multiplier`` × its L2
  sensitivity, and that sensitivity was derived *under the run's relation* by the mechanism
  (e.g. a mean embedding: 2/n under replace-one; a sum embedding: 1 under add/remove). Its
  privacy loss is then that of N(0, m²) against N(1, m²) whatever the relation, so it is
  composed as dp-accounting's add/remove ``GaussianDpEvent(m)`` (and as ``GaussianDpEvent(2m)``
  in a replace-one PLD accountant, whose Gaussian is per unit *record norm*: a replacement moves
  a sum by twice the record bound).
* :class:`SubsampledGaussian` — DP-SGD steps: Poisson sampling at rate q, each record's
  gradient clipped to C, noise std ``noise_multiplier`` × C. Under ``add_remove`` this is
  dp-accounting's ``PoissonSampledDpEvent``; under ``replace_one`` the same event in a PLD
  accountant built with ``NeighboringRelation.REPLACE_ONE`` (dp-accounting's RDP accountant has
  no replace-one bound for Poisson sampling: that combination is refused, not approximated).

References: Mironov, "Rényi Differential Privacy", CSF 2017; Koskela, Jälkö, Honkela, "Computing
tight differential privacy guarantees using FFT", AISTATS 2020 (PLD); Balle & Wang, "Improving
the Gaussian mechanism for differential privacy", ICML 2018 (Gaussian composition is Gaussian).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import dp_accounting
from dp_accounting import pld, rdp
from dp_accounting.pld import common, privacy_loss_mechanism

from dpsynth.errors import ConfigError, PrivacyError

ACCOUNTANTS = ("pld", "rdp")
NEIGHBOURS = ("replace_one", "add_remove")
#: PLD discretisation of reported ε (pessimistic: an upper bound at any interval); the searches
#: use a 10× coarser grid (also an upper bound) and the answer is re-checked on this one.
PLD_INTERVAL = 1e-4
_SEARCH_INTERVAL = 1e-3


@dataclass(frozen=True)
class Gaussian:
    """``count`` Gaussian mechanisms with noise std = ``noise_multiplier`` × L2 sensitivity
    (the sensitivity derived under the run's neighbour relation)."""

    noise_multiplier: float
    count: int = 1


@dataclass(frozen=True)
class SubsampledGaussian:
    """``steps`` DP-SGD steps: Poisson rate ``sample_rate``, per-record clipping to C, noise
    std = ``noise_multiplier`` × C."""

    noise_multiplier: float
    sample_rate: float
    steps: int


Event = Gaussian | SubsampledGaussian


def check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(
            f"privacy.accountant: got {accountant!r}; allowed: {', '.join(ACCOUNTANTS)}. "
            "pld is exact (up to discretisation, rounded up); rdp is the papers' (looser)."
        )
    return accountant


def check_neighbours(neighbours: str) -> str:
    if neighbours not in NEIGHBOURS:
        raise ConfigError(
            f"privacy.neighbours: got {neighbours!r}; allowed: {', '.join(NEIGHBOURS)}. "
            "replace_one: D, D' differ in one record's value (n public); add_remove: one "
            "record added or removed."
        )
    return neighbours


def check_target(epsilon: float, delta: float) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise PrivacyError(f"privacy.epsilon: got {epsilon}; a DP release needs a finite ε > 0.")
    if not 0 < delta < 1:
        raise PrivacyError(f"privacy.delta: got {delta}; allowed: 0 < δ < 1 (e.g. 1e-5).")


def _normalise(events: Sequence[Event], neighbours: str) -> list[Event]:
    """Drop empty events; a full-batch DP-SGD step (q = 1) is a plain Gaussian whose
    sensitivity is C (add/remove) or 2C (replace-one)."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, SubsampledGaussian) and ev.sample_rate >= 1.0:
            factor = 2.0 if neighbours == "replace_one" else 1.0
            ev = Gaussian(ev.noise_multiplier / factor, ev.steps)
        if (isinstance(ev, Gaussian) and ev.count > 0) or (
            isinstance(ev, SubsampledGaussian) and ev.steps > 0 and ev.sample_rate > 0
        ):
            out.append(ev)
    return out


def _make_accountant(
    events: list[Event], neighbours: str, accountant: str, interval: float
) -> dp_accounting.PrivacyAccountant:
    subsampled = any(isinstance(ev, SubsampledGaussian) for ev in events)
    replace = neighbours == "replace_one" and subsampled
    if accountant == "rdp":
        if replace:
            raise ConfigError(
                "privacy.accountant: got 'rdp' with privacy.neighbours=replace_one for a "
                "Poisson-subsampled mechanism (DP-SGD); dp-accounting's RDP accountant has no "
                "replace-one bound for Poisson sampling. Use privacy.accountant=pld."
            )
        acc: dp_accounting.PrivacyAccountant = rdp.RdpAccountant()
    else:
        relation = dp_accounting.NeighboringRelation
        acc = pld.PLDAccountant(
            relation.REPLACE_ONE if replace else relation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=interval,
        )
    for ev in events:
        if isinstance(ev, Gaussian):
            if ev.noise_multiplier <= 0:
                raise PrivacyError(f"a Gaussian release with noise multiplier {ev} is not DP.")
            m = ev.noise_multiplier * (2.0 if replace else 1.0)
            acc.compose(dp_accounting.GaussianDpEvent(m), ev.count)
        else:
            step = dp_accounting.PoissonSampledDpEvent(
                ev.sample_rate, dp_accounting.GaussianDpEvent(ev.noise_multiplier)
            )
            acc.compose(step, ev.steps)
    return acc


def epsilon_spent(
    events: Sequence[Event],
    *,
    delta: float,
    neighbours: str = "replace_one",
    accountant: str = "pld",
    interval: float = PLD_INTERVAL,
) -> float:
    """ε at ``delta`` of the composition of ``events`` under ``neighbours``, by dp-accounting.

    Privacy: an upper bound on ε for the adaptive composition of the events (PLD rounds up).
    """
    check_accountant(accountant)
    check_neighbours(neighbours)
    evs = _normalise(events, neighbours)
    if not evs:
        return 0.0
    return _epsilon_cached(tuple(evs), delta, neighbours, accountant, interval)


@functools.lru_cache(maxsize=512)
def _epsilon_cached(
    events: tuple[Event, ...], delta: float, neighbours: str, accountant: str, interval: float
) -> float:
    if accountant == "pld" and all(isinstance(ev, Gaussian) for ev in events):
        # Gaussians compose to one Gaussian: its PLD is dp-accounting's analytic Gaussian
        # privacy loss, exact with no discretisation (and ~1000× faster than a grid).
        return _gaussian_epsilon(_effective_multiplier(events), delta)
    acc = _make_accountant(list(events), neighbours, accountant, interval)
    return float(acc.get_epsilon(delta))


def _effective_multiplier(events: Sequence[Event]) -> float:
    """The one Gaussian that ``events`` (all Gaussian) compose to: 1/m² = Σ count_j/m_j²."""
    total = 0.0
    for ev in events:
        assert isinstance(ev, Gaussian)
        if ev.noise_multiplier <= 0:
            raise PrivacyError(f"a Gaussian release with noise multiplier {ev} is not DP.")
        total += ev.count / ev.noise_multiplier**2
    return 1.0 / math.sqrt(total)


def _gaussian_epsilon(m: float, delta: float) -> float:
    """Smallest ε (to 1e-9 relative, rounded up) at which N(0, m²) vs N(1, m²) is (ε, δ)-DP,
    by bisection on dp-accounting's exact ``GaussianPrivacyLoss.get_delta_for_epsilon``."""
    loss = privacy_loss_mechanism.GaussianPrivacyLoss(m, sensitivity=1.0)
    if loss.get_delta_for_epsilon(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while loss.get_delta_for_epsilon(hi) > delta:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if loss.get_delta_for_epsilon(mid) <= delta else (mid, hi)
    return hi


def exact_epsilon(events: Sequence[Event], *, delta: float, neighbours: str) -> float:
    """The PLD ε of what was released (the yardstick every row reports beside the target)."""
    return epsilon_spent(events, delta=delta, neighbours=neighbours, accountant="pld")


@functools.lru_cache(maxsize=128)
def calibrate_gaussian(*, epsilon: float, delta: float, accountant: str = "pld") -> float:
    """Smallest noise multiplier m of ONE Gaussian mechanism that is (ε, δ)-DP.

    Why one is enough for every one-shot method: Gaussian mechanisms compose to a Gaussian
    mechanism (Σ_j 1/m_j² = 1/m²), under RDP and under the exact PLD, whatever the relation
    once each sensitivity is derived under it. A run's budget is therefore one multiplier m,
    and each release takes a share f_j of its 1/m² (:func:`share_multiplier`).
    """
    check_target(epsilon, delta)
    check_accountant(accountant)
    if accountant == "pld":
        # The exact Gaussian calibration (Balle & Wang's analytic Gaussian mechanism), as
        # dp-accounting's PLD implements it; nudged up until the reported ε meets the target.
        params = common.DifferentialPrivacyParameters(epsilon, delta)
        m = float(
            privacy_loss_mechanism.GaussianPrivacyLoss.from_privacy_guarantee(
                params, sensitivity=1.0
            ).standard_deviation
        )
        while _gaussian_epsilon(m, delta) > epsilon:
            m *= 1 + 1e-9
    else:
        m = float(
            dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                dp_accounting.GaussianDpEvent,
                epsilon,
                delta,
                dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
                tol=1e-6,
            )
        )
    spent = epsilon_spent(
        [Gaussian(m)], delta=delta, accountant=accountant, neighbours="add_remove"
    )
    if spent > epsilon * (1 + 1e-9):  # calibrate_dp_mechanism returns the safe side; verify
        raise PrivacyError(
            f"calibration returned m={m} spending ε={spent} > target {epsilon}; refusing to "
            "release. Report this as a bug."
        )
    return m


def share_multiplier(total: float, share: float) -> float:
    """Noise multiplier of a Gaussian release taking ``share`` of a budget whose single-Gaussian
    multiplier is ``total`` (shares of 1/m² add up: Σ share ≤ 1 keeps the composition at m)."""
    if not 0 < share <= 1:
        raise ConfigError(f"budget share: got {share}; allowed: 0 < share ≤ 1.")
    return total / math.sqrt(share)


def remaining_multiplier(total: float, spent: Sequence[Event]) -> float:
    """Multiplier left for one more Gaussian release after the Gaussian ``spent`` events,
    so that everything composes to exactly the budget's single Gaussian ``total``."""
    used = 0.0
    for ev in spent:
        if not isinstance(ev, Gaussian):
            raise PrivacyError(f"remaining_multiplier: {ev} is not a Gaussian release.")
        used += ev.count / ev.noise_multiplier**2
    left = 1.0 / total**2 - used
    if left <= 1e-12 / total**2:
        raise PrivacyError(
            f"earlier releases of this run used the whole budget (Σ 1/m² = {used:.4g} ≥ "
            f"1/m_total² = {1 / total**2:.4g}); lower their shares."
        )
    return 1.0 / math.sqrt(left)


def calibrate_sgd(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    prefix: Sequence[Event] = (),
    neighbours: str = "replace_one",
    accountant: str = "pld",
) -> float:
    """Smallest σ (to tolerance, on the safe side) whose ``steps`` DP-SGD steps at rate q,
    after the ``prefix`` releases, spend ≤ ε under ``neighbours``.

    A bracket by doubling/halving, then Illinois false position on log ε against log σ, on a
    coarse PLD grid (an upper bound); the result is re-checked on the fine grid.
    """
    check_target(epsilon, delta)
    tol = min(0.01, 0.005 * epsilon)
    pre = tuple(prefix)

    def f(sigma: float) -> float:
        ev = (*pre, SubsampledGaussian(sigma, sample_rate, steps))
        return epsilon_spent(
            ev,
            delta=delta,
            neighbours=neighbours,
            accountant=accountant,
            interval=_coarse(accountant),
        )

    if (
        pre
        and epsilon_spent(pre, delta=delta, neighbours=neighbours, accountant=accountant) >= epsilon
    ):
        raise ConfigError(
            f"the releases before training (class counts, schema) alone spend ≥ ε = {epsilon}; "
            "give them more noise or fewer releases."
        )
    lo = hi = 1.0
    f_lo = f_hi = f(1.0)
    if f_hi > epsilon:  # need more noise: double until safe
        while f_hi > epsilon:
            lo, f_lo, hi = hi, f_hi, hi * 2
            if hi > 1e6:
                raise PrivacyError(f"privacy.epsilon: {epsilon} is too small to calibrate σ.")
            f_hi = f(hi)
    else:  # halve until unsafe
        while f_lo <= epsilon:
            hi, f_hi, lo = lo, f_lo, lo / 2
            if lo < 1e-2:
                return hi  # ε beyond any useful noise level: the smallest σ tried
            f_lo = f(lo)
    a, b = math.log(lo), math.log(hi)
    ga, gb = math.log(f_lo / epsilon), math.log(f_hi / epsilon)  # ga > 0 ≥ gb
    side = 0
    for _ in range(100):
        if epsilon - f_hi <= tol or b - a < 1e-9:
            break
        x = (a * gb - b * ga) / (gb - ga)
        gx = math.log(f(math.exp(x)) / epsilon)
        if gx > 0:
            a, ga = x, gx
            if side == 1:
                gb /= 2
            side = 1
        else:
            b, gb, f_hi = x, gx, math.exp(gx) * epsilon
            if side == -1:
                ga /= 2
            side = -1
    return math.exp(b)


def _coarse(accountant: str) -> float:
    return _SEARCH_INTERVAL if accountant == "pld" else PLD_INTERVAL


def affordable_steps(
    *,
    epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    prefix: Sequence[Event] = (),
    neighbours: str = "replace_one",
    accountant: str = "pld",
) -> int:
    """Largest t ≤ ``steps`` with ε(prefix + t steps of (σ, q)) ≤ ε; 0 if not even one."""

    def ok(t: int) -> bool:
        ev = (*prefix, SubsampledGaussian(noise_multiplier, sample_rate, t))
        return (
            epsilon_spent(ev, delta=delta, neighbours=neighbours, accountant=accountant) <= epsilon
        )

    if not ok(1):
        return 0
    if ok(steps):
        return steps
    lo, hi = 1, steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def calibrate_noise_multiplier(
    *, epsilon: float, delta: float, releases: int, accountant: str = "pld"
) -> float:
    """Multiplier m of each of ``releases`` equal Gaussian releases composing to (ε, δ)."""
    if releases < 1:
        raise PrivacyError(f"releases: got {releases}; a calibration needs at least one release.")
    return calibrate_gaussian(epsilon=epsilon, delta=delta, accountant=accountant) * math.sqrt(
        releases
    )

"""What every audit shares: the statistics that turn observations into ε lower bounds, and the
config plumbing of the ``dpsynth-audit`` command.

Three kinds of bound, each valid at its stated confidence for *any* mechanism that satisfies
(ε, δ)-DP (so a bound above the claim proves a bug, at that confidence):

* :func:`threshold_test` — non-parametric: a threshold on a score, its false-positive and
  false-negative rates bounded by Clopper–Pearson, and ε ≥ log((1 − δ − FNR⁺)/FPR⁺) (Kairouz,
  Oh, Viswanath 2015; as used by Jagielski et al. 2020 and Nasr et al. 2021).
* :func:`mu_lower_known_shift` / :func:`mu_lower_empirical` — parametric: when the score is
  Gaussian with the same variance under both neighbours (a projection of Gaussian noise), the
  pair is exactly μ-GDP with μ = shift / std (Dong, Roth, Su 2022), so a lower confidence bound
  on μ is a lower bound on ε(δ) = :func:`gaussian_exact_epsilon` (Balle & Wang 2018). Far
  more powerful than counting tail events: the whole sample informs one number.
* :func:`one_run_epsilon` — many canaries in one run, each in or out with probability ½, the
  auditor's guesses counted (Steinke, Nasr, Jagielski, "Privacy auditing with one (1) training
  run", NeurIPS 2023, Theorem 5.2 for (ε, δ)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import beta, binom, chi2, nct, norm

from dpsynth.errors import ConfigError

EXIT_VIOLATION = 1
EXIT_USER_ERROR = 2
#: Groups the audits do not read; removed from the composition.
UNUSED_GROUPS = ("eval", "logger", "trainer")


# ----------------------------------------------------------------------------- DP ↔ tests


def clopper_pearson_upper(count: np.ndarray | float, n: int, level: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a binomial rate.

    Args:
        count: observed successes (may be a real-valued *expected* count, for planning).
        n: trials.
        level: one-sided confidence, e.g. 0.975.
    Returns: p⁺ with P(p ≤ p⁺) ≥ level; exactly 1 when ``count ≥ n``.
    """
    k = np.atleast_1d(np.asarray(count, dtype=np.float64))
    out = np.ones_like(k)
    inside = k < n
    out[inside] = beta.ppf(level, k[inside] + 1.0, n - k[inside])
    return out


def epsilon_from_rates(
    fpr_upper: np.ndarray, fnr_upper: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """The two ε lower bounds implied by a test's (upper-bounded) error rates.

    (ε, δ)-DP forces FPR + e^ε FNR ≥ 1 − δ and FNR + e^ε FPR ≥ 1 − δ for every test (Kairouz
    et al. 2015), so ε ≥ log((1 − δ − FNR)/FPR) and ε ≥ log((1 − δ − FPR)/FNR); plugging in
    upper bounds on both rates keeps the inequalities valid.

    Returns: (upper-tail form, lower-tail form), −inf where a numerator is ≤ 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = np.log(np.clip(1.0 - delta - fnr_upper, 0.0, None) / fpr_upper)
        lower = np.log(np.clip(1.0 - delta - fpr_upper, 0.0, None) / fnr_upper)
    return np.nan_to_num(upper, nan=-np.inf), np.nan_to_num(lower, nan=-np.inf)


class AuditRecord:
    """What every audit result shares: a JSON-able dict and the verdict line."""

    violation: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def verdict(self, claim: str = "claimed ε") -> str:
        if self.violation:
            return f"VIOLATION: the audited lower bound exceeds the {claim}"
        return f"consistent: lower bound ≤ {claim}"


@dataclass
class TestOutcome:
    """The evaluated threshold test and the ε lower bound it certifies.

    ``upper-tail`` guesses D′ when the score exceeds τ (null hypothesis D), ``lower-tail``
    guesses D when the score is at most τ (null hypothesis D′) — the symmetric form of the same
    DP inequality.

    Attributes:
        epsilon_lower_bound: max(0, the certified bound).
        threshold: τ.
        form: ``upper-tail`` or ``lower-tail``.
        false_positives / false_negatives: counts on the evaluation split.
        null_trials / alternative_trials: evaluation trials under the null and the alternative.
        fpr / fnr: empirical rates; fpr_upper / fnr_upper: their Clopper–Pearson bounds.
    """

    __test__ = False  # not a pytest class

    epsilon_lower_bound: float
    threshold: float
    form: str
    false_positives: int
    false_negatives: int
    null_trials: int
    alternative_trials: int
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float


def threshold_test(
    select_d: np.ndarray,
    select_d_prime: np.ndarray,
    eval_d: np.ndarray,
    eval_d_prime: np.ndarray,
    *,
    delta: float,
    confidence: float,
) -> TestOutcome:
    """Pick (τ, form) on the selection scores, certify ε on the disjoint evaluation scores.

    Scores are oriented so that D′ tends to score higher. Why the split: the bound is valid
    whatever τ is, provided τ does not depend on the evaluation trials. The choice fits a normal
    law to each selection sample and maximises the bound *expected* at the evaluation sizes; it
    only affects power, never validity.

    Confidence: two one-sided Clopper–Pearson bounds at 1 − (1 − confidence)/2 each, so both
    hold at once with probability ≥ ``confidence`` (union bound).
    """
    level = 1.0 - (1.0 - confidence) / 2.0
    n0, n1 = len(eval_d), len(eval_d_prime)
    m0, m1 = float(np.mean(select_d)), float(np.mean(select_d_prime))
    tiny = 1e-12 * max(1.0, abs(m0), abs(m1))
    s0, s1 = max(float(np.std(select_d)), tiny), max(float(np.std(select_d_prime)), tiny)
    span = 10.0 * max(s0, s1)
    grid = np.linspace(min(m0, m1) - span, max(m0, m1) + span, 2001)
    exp_d_above = n0 * norm.sf(grid, m0, s0)  # D's trials above τ
    exp_dp_below = n1 * norm.cdf(grid, m1, s1)  # D′'s trials at or below τ
    planned_up, planned_lo = epsilon_from_rates(
        clopper_pearson_upper(exp_d_above, n0, level),
        clopper_pearson_upper(exp_dp_below, n1, level),
        delta,
    )
    i_up, i_lo = int(np.argmax(planned_up)), int(np.argmax(planned_lo))

    def d_above(tau: float) -> int:
        return int(np.count_nonzero(eval_d > tau))

    def dp_below(tau: float) -> int:
        return int(np.count_nonzero(eval_d_prime <= tau))

    if planned_up[i_up] >= planned_lo[i_lo]:
        tau, form = float(grid[i_up]), "upper-tail"
        fp, n_null, fn, n_alt = d_above(tau), n0, dp_below(tau), n1
    else:
        tau, form = float(grid[i_lo]), "lower-tail"
        fp, n_null, fn, n_alt = dp_below(tau), n1, d_above(tau), n0
    fpr_u = float(clopper_pearson_upper(fp, n_null, level)[0])
    fnr_u = float(clopper_pearson_upper(fn, n_alt, level)[0])
    eps = float(epsilon_from_rates(np.array([fpr_u]), np.array([fnr_u]), delta)[0][0])
    return TestOutcome(
        epsilon_lower_bound=max(0.0, eps),
        threshold=tau,
        form=form,
        false_positives=fp,
        false_negatives=fn,
        null_trials=n_null,
        alternative_trials=n_alt,
        fpr=fp / n_null,
        fnr=fn / n_alt,
        fpr_upper=fpr_u,
        fnr_upper=fnr_u,
    )


# ----------------------------------------------------------------------------- Gaussian DP


def gaussian_exact_epsilon(mu: float, delta: float) -> float:
    """Exact ε at δ of a pair of Gaussians with equal variance whose means are μ stds apart
    (μ-GDP): the smallest ε with Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) ≤ δ (Balle & Wang, ICML
    2018). Any mechanism with such a pair of output projections is at best (this ε, δ)-DP."""
    if mu <= 0:
        return 0.0
    if not math.isfinite(mu):
        return math.inf

    def excess(eps: float) -> float:
        tail = float(norm.logcdf(-eps / mu - mu / 2)) + eps  # log of e^ε Φ(·), no overflow
        return float(norm.cdf(-eps / mu + mu / 2)) - (math.exp(tail) if tail < 700 else math.inf)

    if excess(0.0) <= delta:
        return 0.0
    hi = 1.0
    while excess(hi) > delta:
        hi *= 2.0
        if hi > 1e4:
            return math.inf
    return float(brentq(lambda e: excess(e) - delta, 0.0, hi, xtol=1e-10))


@dataclass
class MuBound:
    """A Gaussian-DP μ estimate and its one-sided lower confidence bound.

    Attributes:
        mu: point estimate; mu_lower: lower bound at ``level``; level: its confidence.
        std: the estimated score std (in the units the scores are in); std_upper: its bound.
        shift: the mean shift used (exact, or estimated); method: how it was obtained.
        epsilon: ε(δ) of μ̂; epsilon_lower_bound: ε(δ) of μ_lower (≥ 0).
    """

    mu: float
    mu_lower: float
    level: float
    std: float
    std_upper: float
    shift: float
    method: str
    epsilon: float
    epsilon_lower_bound: float


def mu_lower_known_shift(
    scores_d: np.ndarray, scores_dp: np.ndarray, shift: float, *, delta: float, level: float
) -> MuBound:
    """μ-GDP lower bound when the two means are *known*: −shift/2 under D, +shift/2 under D′.

    White-box: the means are the exact pre-noise statistics projected on the test direction
    (computed by the real code), and the mechanism adds zero-mean Gaussian noise whose law does
    not depend on the data, so the scores are N(∓shift/2, s²) with one unknown s. The pooled
    sum of squares around the known means is s²·χ²(N₀ + N₁), so
    s⁺ = ŝ·√(N / χ²_{1−level}(N)) bounds s at ``level`` and μ⁻ = shift / s⁺ bounds μ.
    """
    r = np.concatenate([np.asarray(scores_d) + shift / 2.0, np.asarray(scores_dp) - shift / 2.0])
    dof = r.size
    ss = float(np.sum(r.astype(np.float64) ** 2))
    std = math.sqrt(ss / dof)
    std_upper = math.sqrt(ss / float(chi2.ppf(1.0 - level, dof)))
    mu = shift / std if std > 0 else math.inf
    mu_lo = shift / std_upper if std_upper > 0 else math.inf
    return MuBound(
        mu=mu,
        mu_lower=mu_lo,
        level=level,
        std=std,
        std_upper=std_upper,
        shift=shift,
        method="known means (exact pre-noise statistics), pooled variance, χ² bound",
        epsilon=gaussian_exact_epsilon(mu, delta),
        epsilon_lower_bound=gaussian_exact_epsilon(mu_lo, delta),
    )


def mu_lower_empirical(
    scores_d: np.ndarray, scores_dp: np.ndarray, *, delta: float, level: float
) -> MuBound:
    """μ-GDP lower bound from the sample alone: μ̂ = (x̄′ − x̄) / s_pooled, and the exact
    one-sided bound of the noncentral t: t = μ̂·√(n₀n₁/(n₀+n₁)) ~ nct(n₀+n₁−2, μ·√(n₀n₁/(n₀+n₁)))."""
    a, b = np.asarray(scores_d, np.float64), np.asarray(scores_dp, np.float64)
    n0, n1 = a.size, b.size
    df = n0 + n1 - 2
    sp = math.sqrt((float(np.sum((a - a.mean()) ** 2)) + float(np.sum((b - b.mean()) ** 2))) / df)
    shift = float(b.mean() - a.mean())
    scale = math.sqrt(n0 * n1 / (n0 + n1))
    if sp <= 0:
        mu = mu_lo = math.inf if shift > 0 else 0.0
    else:
        mu = shift / sp
        t = mu * scale

        # P_λ(T ≥ t) grows with λ: the bound is the λ where that probability is 1 − level.
        def tail(lam: float) -> float:
            return float(nct.sf(t, df, lam)) - (1.0 - level)

        if t <= 0 or tail(0.0) >= 0:
            mu_lo = 0.0
        else:
            lo, hi = 0.0, t
            while tail(hi) < 0:
                hi = hi + 10.0 + abs(hi)
            mu_lo = float(brentq(tail, lo, hi, xtol=1e-9)) / scale
    return MuBound(
        mu=mu,
        mu_lower=mu_lo,
        level=level,
        std=sp,
        std_upper=math.nan,
        shift=shift,
        method="empirical means and pooled variance, noncentral-t bound",
        epsilon=gaussian_exact_epsilon(mu, delta),
        epsilon_lower_bound=gaussian_exact_epsilon(mu_lo, delta),
    )


# ----------------------------------------------------------------------------- one run


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[≥ v of r guesses correct] for an (ε, δ)-DP mechanism with m canaries, each included
    independently with probability ½ (Steinke, Nasr, Jagielski 2023, Theorem 5.2).

    With q = e^ε/(1 + e^ε) (the accuracy of ε-randomised response), the bound is
    P[Bin(r, q) ≥ v] + 2mδ · max_{1≤i≤v} P[v − i ≤ Bin(r, q) < v] / i.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"one_run_p_value: need 0 ≤ v ≤ r ≤ m, got v={v}, r={r}, m={m}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(v - 1, r, q))
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        below = np.cumsum(binom.pmf(v - i, r, q))  # P[v − i ≤ Bin < v]
        tail += 2.0 * m * delta * float(np.max(below / i))
    return min(tail, 1.0)


def one_run_epsilon(m: int, r: int, v: int, delta: float, alpha: float) -> float:
    """The largest ε rejected at level ``alpha``: every (ε′, δ)-DP mechanism with ε′ below it
    would give ≥ v correct guesses with probability < alpha (0 when none is rejected)."""
    if one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return math.inf
    for _ in range(60):  # p-value grows with ε
        mid = (lo + hi) / 2.0
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------------- arguments


def check_int(key: str, value: Any, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{key}: got {value!r}; allowed: an integer ≥ {low}. {fix}")
    return int(value)


def check_unit(key: str, value: Any, fix: str) -> float:
    if not (isinstance(value, int | float) and 0.0 < float(value) < 1.0):
        raise ConfigError(
            f"{key}: got {value!r}; allowed: a number strictly between 0 and 1. {fix}"
        )
    return float(value)


def check_split(
    trials: int, selection_fraction: float, confidence: float
) -> tuple[float, float, int]:
    """Validate how the trials split into threshold selection and rate estimation.
    Returns (fraction, confidence, selection trials)."""
    selection_fraction = check_unit(
        "--selection-fraction", selection_fraction, "Use e.g. --selection-fraction 0.1."
    )
    confidence = check_unit("--confidence", confidence, "Use e.g. --confidence 0.95.")
    n_select = int(round(trials * selection_fraction))
    if not 100 <= n_select <= trials - 100:
        raise ConfigError(
            f"--selection-fraction: got {selection_fraction} with --trials {trials}, leaving "
            f"{n_select} selection trials; allowed: ≥ 100 trials on each side. Raise --trials."
        )
    return selection_fraction, confidence, n_select


# ----------------------------------------------------------------------------- config


def refuse(overrides: Sequence[str], e: Exception) -> ConfigError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return ConfigError(
        f"overrides {' '.join(overrides) or '(none)'}: {first} Allowed methods: "
        f"{', '.join(auditable_methods())}, dpsgd; fix the override, e.g. method=pearl "
        "privacy.epsilon=1."
    )


def auditable_methods() -> list[str]:
    """The ``conf/method`` choices whose ``_target_`` is a one-shot embedding method."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from dpsynth.config import CONF_DIR, group_options
    from dpsynth.methods.oneshot import EmbeddingMethod

    names = []
    for name in group_options("method"):
        node = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
        target = node.get("_target_")
        for parent in node.get("defaults", []) if target is None else []:
            # a preset that extends another (defaults: [pearl, _self_]) has its parent's target
            if isinstance(parent, str) and parent != "_self_":
                target = OmegaConf.load(CONF_DIR / "method" / f"{parent}.yaml").get("_target_")
        try:
            if target and issubclass(get_class(str(target)), EmbeddingMethod):
                names.append(name)
        except Exception:  # noqa: BLE001 - an unimportable method is simply not auditable
            continue
    return names


def compose_config(overrides: Sequence[str], default_dataset: str | None = None) -> Any:
    """Compose ``conf/`` with Hydra overrides (the groups the audit does not read removed);
    ``default_dataset`` replaces the app's default dataset unless the overrides choose one."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dpsynth.config import CONF_DIR

    overrides = list(overrides)
    touched = {o.lstrip("+~").split("=")[0].split(".")[0] for o in overrides}
    removed = [f"~{g}" for g in UNUSED_GROUPS if g not in touched]
    chosen = {o.split("=")[0] for o in overrides}
    extra = [f"dataset={default_dataset}"] if default_dataset and "dataset" not in chosen else []
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose("config", overrides=[*removed, *extra, *overrides])
    except (HydraException, OmegaConfBaseException, ValueError, ImportError) as e:
        raise refuse(overrides, e) from e


def method_class(cfg: Any, overrides: Sequence[str]) -> type:
    from hydra.errors import HydraException
    from hydra.utils import get_class
    from omegaconf.errors import OmegaConfBaseException

    try:
        return get_class(str(cfg.method.get("_target_")))
    except (HydraException, OmegaConfBaseException, ValueError, ImportError) as e:
        raise refuse(overrides, e) from e


def instantiate_method(cfg: Any, overrides: Sequence[str]) -> Any:
    from hydra.errors import HydraException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    from dpsynth.errors import DpsynthError

    try:
        return instantiate(cfg.method, _convert_="all")
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, DpsynthError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise refuse(overrides, e) from e


def privacy_from_config(cfg: Any) -> Any:
    """The composed ``privacy`` group as a :class:`~dpsynth.privacy.release.PrivacySpec`,
    refused with the key, the value and what is allowed when it cannot back a DP claim."""
    from omegaconf.errors import OmegaConfBaseException

    from dpsynth.privacy.accounting import check_accountant, check_neighbours
    from dpsynth.privacy.release import PrivacySpec

    try:
        eps, delta = cfg.privacy.epsilon, cfg.privacy.delta
        acc = cfg.privacy.get("accountant", "pld")
        neighbours = cfg.privacy.get("neighbours", "replace_one")
    except OmegaConfBaseException as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"privacy: {first}. Set it explicitly, e.g. privacy.delta=1e-5.") from e
    if not (isinstance(eps, int | float) and eps > 0 and math.isfinite(eps)):
        raise ConfigError(
            f"privacy.epsilon: got {eps}; allowed: a finite ε > 0. Use e.g. privacy.epsilon=1."
        )
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ConfigError(f"privacy.delta: got {delta}; allowed: 0 < δ < 1. Use 1e-5.")
    check_accountant(str(acc))
    check_neighbours(str(neighbours))
    return PrivacySpec(float(eps), float(delta), str(acc), str(neighbours))

"""DP estimates of the hyper-parameters that would otherwise be read off the private data.

The frequency scale σ0² of the CF / random-Fourier-feature embeddings is, in DP-MERF's and
PEARL's code, the *median heuristic* on the private training split (the median pairwise
distance, squared). Computed on the private data, it is a release that no ledger counts. Here
it is a DP estimate paid from the run's budget:

    σ0² = E‖x − x′‖² = 2 (E‖x‖² − ‖E x‖²),

the mean squared pairwise distance, which for high-dimensional data (where distances
concentrate) equals the median heuristic's value: digits 9.37 vs 9.39, MNIST 105.5 vs 104.1
(measured on the training splits, 5,000 random pairs for the median; see
``experiments/pearl_fmnist/README.md``). It needs two sums, each with a sensitivity that
follows from a public bound on the records (images in [0, 1]^d: ‖x‖² ≤ d, ‖x − x′‖ ≤ √d).

On small data the DP estimate is mostly noise (scikit-learn's breast cancer, 455 rows, ε = 1:
σ0² came out 0.46 against ~17 in other draws, and PEARL's ROC-AUC fell to 0.35). ``auto``
(:func:`auto_mean_sq_distance`) keeps the estimate when its noise sd — public, computed from the
release — is at most half of the smaller of the estimate and a public prior, the value
E‖x − x′‖² takes for records uniform on the public domain (images: d/6; tables: 2/3 per
numeric and 2(1 − 1/m) per m-way categorical column), and else uses that prior; the spend is
the same either way.

References: Harder et al., "DP-MERF", AISTATS 2021 (median heuristic); Gretton et al., "A
kernel two-sample test", JMLR 2012 (the heuristic).
"""

from __future__ import annotations

import numpy as np

from dpsynth.data.base import DataSpec
from dpsynth.privacy.release import Budget, Statistic, gaussian_release


def norm_bounds(spec: DataSpec) -> tuple[float, float]:
    """Public bounds (max ‖x‖², max ‖x − x′‖) of one encoded record, from the spec alone.

    Images live in [0, 1]^d (clipped there before use); encoded tables hold numerics in
    [-1, 1] (one dimension each) and one one-hot block per categorical column, and are only
    scaled into their ball, so two of them are at most 2R apart.
    """
    if spec.kind == "image":
        return float(spec.dim), float(np.sqrt(spec.dim))
    r2 = float(sum(1 for c in spec.columns if c.kind in ("numeric", "categorical")))
    return r2, 2.0 * float(np.sqrt(r2))


def uniform_mean_sq_distance(spec: DataSpec) -> float:
    """E‖x − x′‖² for two records drawn uniformly from the public domain of ``spec`` — a prior
    scale that reads no data. A pixel uniform on [0, 1] gives E(x − x′)² = 1/6; a numeric
    column uniform on [-1, 1] gives 2/3; an m-way one-hot gives 2(1 − 1/m)."""
    if spec.kind == "image":
        return float(spec.dim) / 6.0
    total = 0.0
    for col in spec.columns:
        total += 2.0 / 3.0 if col.kind == "numeric" else 2.0 * (1.0 - 1.0 / max(col.width, 1))
    return total


def auto_mean_sq_distance(
    x: np.ndarray,
    spec: DataSpec,
    *,
    budget: Budget,
    share: float,
    max_rel_sd: float = 0.5,
) -> tuple[float, dict[str, float | str]]:
    """σ0² for ``sigma0_sq: auto``: the DP estimate (:func:`dp_mean_sq_distance`, paid from
    ``share`` of ``budget`` in every case) when its noise sd is ≤ ``max_rel_sd`` × the smaller
    of the estimate and the public prior :func:`uniform_mean_sq_distance`, else that prior.
    The choice reads only the release and public numbers (post-processing). ½ is set a priori:
    within it the squared kernel width is off by less than a factor 2 at two sds, which the
    median heuristic itself tolerates; measured against the prior alone, an estimate that the
    floor caught (a noise draw below zero) would pass.

    Returns the value and a record of how it was chosen (for the run's metrics).
    """
    estimate, sd = dp_mean_sq_distance_with_sd(x, spec, budget=budget, share=share)
    prior = uniform_mean_sq_distance(spec)
    # A public domain of one point per column (e.g. a DP schema that kept one category of
    # each column) has prior 0, which is no kernel width; the estimate is floored above 0.
    use_dp = prior <= 0 or sd <= max_rel_sd * min(estimate, prior)
    record: dict[str, float | str] = {
        "sigma0_source": "dp" if use_dp else "prior",
        "sigma0_dp_estimate": estimate,
        "sigma0_dp_sd": sd,
        "sigma0_prior": prior,
    }
    return (estimate if use_dp else prior), record


def dp_mean_sq_distance(
    x: np.ndarray, spec: DataSpec, *, budget: Budget, share: float, chunk: int = 8192
) -> float:
    """DP estimate of E‖x − x′‖² (:func:`dp_mean_sq_distance_with_sd`, without the sd)."""
    return dp_mean_sq_distance_with_sd(x, spec, budget=budget, share=share, chunk=chunk)[0]


def dp_mean_sq_distance_with_sd(
    x: np.ndarray,
    spec: DataSpec,
    *,
    budget: Budget,
    share: float,
    chunk: int = 8192,
) -> tuple[float, float]:
    """DP estimate of E‖x − x′‖² over pairs of private records ``x`` (n, d).

    Privacy: one Gaussian release (``gaussian_release`` with ``share`` of ``budget``, the
    statistics composed as separate releases would be) of, under replace-one, (mean ‖x‖²,
    mean x) with sensitivities (R²/n, D/n), and under add/remove (Σ‖x‖², Σx, n) with
    sensitivities (R², R, 1); R² and D from :func:`norm_bounds`. Records are scaled into the
    public ball first, so the sensitivities hold for any input. Everything after the release
    is post-processing (debiasing by the known noise std).

    Returns the estimate and its noise sd (post-processing: the released noise stds and, for
    the mean's cross term, the debiased noisy ‖mean‖²):
    sd = 2 √(s_a² + 4 s² ‖m‖² + 2 d s⁴) for the noise stds s_a of mean ‖x‖² and s of each
    coordinate of the mean.
    """
    n, d = x.shape
    r2, diam = norm_bounds(spec)
    sq = np.zeros(n)
    total = np.zeros(d)
    for start in range(0, n, chunk):
        xb = np.array(x[start : start + chunk], dtype=np.float64)  # (b, d), our own copy
        if spec.kind == "image":
            np.clip(xb, 0.0, 1.0, out=xb)
        s = np.einsum("ij,ij->i", xb, xb)  # (b,) ‖x‖², without a squared copy
        # Enforce the public bound the sensitivity relies on (a no-op on valid records).
        scale = np.minimum(1.0, np.sqrt(r2 / np.maximum(s, 1e-300)))  # (b,)
        sq[start : start + chunk] = s * scale**2
        total += scale @ xb  # Σ scale_j x_j (d,), without a scaled copy (~3× faster on 60k)
    if budget.privacy.neighbours == "replace_one":
        # n public: means. Replacing a record moves Σ‖x‖² by ≤ R² and Σx by ≤ D (both records
        # lie in the ball, any two of them at most D apart).
        stats = [
            Statistic("mean_sq_norm", np.array([sq.mean()]), r2 / n),
            Statistic("mean", total / n, diam / n),
        ]
    else:
        # Add/remove: sums and the count; one record moves them by ≤ R², ≤ R, 1.
        stats = [
            Statistic("sum_sq_norm", np.array([sq.sum()]), r2),
            Statistic("sum", total, float(np.sqrt(r2))),
            Statistic("count", np.array([float(n)]), 1.0),
        ]
    rel = gaussian_release(stats, budget=budget, share=share)
    parts = budget.spends[-1].parts
    if budget.privacy.neighbours == "replace_one":
        a, mean = float(rel["mean_sq_norm"][0]), rel["mean"].astype(np.float64)
        std_a, std_mean = parts["mean_sq_norm"], parts["mean"]
    else:
        n_hat = max(float(rel["count"][0]), 1.0)
        a = float(rel["sum_sq_norm"][0]) / n_hat
        mean = rel["sum"].astype(np.float64) / n_hat
        std_a, std_mean = parts["sum_sq_norm"] / n_hat, parts["sum"] / n_hat
    # ‖noisy mean‖² is biased up by d·std²: subtract it (post-processing, std is public).
    mean_sq = float(mean @ mean) - d * std_mean**2  # unbiased for ‖E x‖²
    msd = 2.0 * (a - mean_sq)
    # A tiny or negative value is noise: floor at 1% of the public maximum, a usable scale.
    value = float(max(msd, 0.01 * r2))
    var = std_a**2 + 4.0 * std_mean**2 * max(mean_sq, 0.0) + 2.0 * d * std_mean**4
    return value, 2.0 * float(np.sqrt(var))

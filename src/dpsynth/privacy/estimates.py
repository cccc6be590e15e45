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


def dp_mean_sq_distance(
    x: np.ndarray,
    spec: DataSpec,
    *,
    budget: Budget,
    share: float,
    chunk: int = 8192,
) -> float:
    """DP estimate of E‖x − x′‖² over pairs of private records ``x`` (n, d).

    Privacy: one Gaussian release (``gaussian_release`` with ``share`` of ``budget``, the
    statistics composed as separate releases would be) of, under replace-one, (mean ‖x‖²,
    mean x) with sensitivities (R²/n, D/n), and under add/remove (Σ‖x‖², Σx, n) with
    sensitivities (R², R, 1); R² and D from :func:`norm_bounds`. Records are scaled into the
    public ball first, so the sensitivities hold for any input. Everything after the release
    is post-processing (debiasing by the known noise std).
    """
    n, d = x.shape
    r2, diam = norm_bounds(spec)
    sq = np.zeros(n)
    total = np.zeros(d)
    for start in range(0, n, chunk):
        xb = np.asarray(x[start : start + chunk], dtype=np.float64)  # (b, d)
        if spec.kind == "image":
            xb = np.clip(xb, 0.0, 1.0)
        s = (xb**2).sum(axis=1)  # (b,)
        # Enforce the public bound the sensitivity relies on (a no-op on valid records).
        scale = np.minimum(1.0, np.sqrt(r2 / np.maximum(s, 1e-300)))  # (b,)
        xb = xb * scale[:, None]
        sq[start : start + chunk] = s * scale**2
        total += xb.sum(axis=0)
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
        std_mean = parts["mean"]
    else:
        n_hat = max(float(rel["count"][0]), 1.0)
        a = float(rel["sum_sq_norm"][0]) / n_hat
        mean = rel["sum"].astype(np.float64) / n_hat
        std_mean = parts["sum"] / n_hat
    # ‖noisy mean‖² is biased up by d·std²: subtract it (post-processing, std is public).
    msd = 2.0 * (a - (float(mean @ mean) - d * std_mean**2))
    # A tiny or negative value is noise: floor at 1% of the public maximum, a usable scale.
    return float(max(msd, 0.01 * r2))

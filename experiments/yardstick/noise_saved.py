"""Noise on the embedding before and after the yardstick (issue 11), at δ = 1e-5.

Before: RDP calibration, embedding and class proportions as two composed releases (each at
multiplier m₂ = the two-release RDP σ), the σ0² heuristic read off the private data (free,
and unaccounted). After: exact PLD calibration, one joint Gaussian with normalised
sensitivity √1.5, and 5% of the budget paid for the DP σ0² estimate. Printed as the noise std
on the embedding in units of its sensitivity (2/n), and the ratio after/before.

    python experiments/yardstick/noise_saved.py
"""

from __future__ import annotations

import math

from dpsynth.privacy.accounting import calibrate_gaussian, calibrate_noise_multiplier

SIGMA0_SHARE = 0.05


def main() -> None:
    rows = [
        "| ε | release | before (RDP, separate) | PLD only | + joint √1.5 | + DP σ0² (5%) "
        "| after/before |",
        "|---|---|---|---|---|---|---|",
    ]
    for eps in (0.2, 1.0, 10.0):
        m_rdp1 = calibrate_gaussian(epsilon=eps, delta=1e-5, accountant="rdp")
        m_rdp2 = calibrate_noise_multiplier(epsilon=eps, delta=1e-5, releases=2, accountant="rdp")
        m_pld = calibrate_gaussian(epsilon=eps, delta=1e-5, accountant="pld")
        share = 1 / math.sqrt(1 - SIGMA0_SHARE)
        for name, before, pld_only, joint in (
            ("embedding only (balanced images)", m_rdp1, m_pld, m_pld),
            ("embedding + proportions", m_rdp2, m_pld * math.sqrt(2), m_pld * math.sqrt(1.5)),
        ):
            after = joint * share
            rows.append(
                f"| {eps:g} | {name} | {before:.3f} | {pld_only:.3f} | {joint:.3f} | "
                f"{after:.3f} | {after / before:.3f} |"
            )
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""DP-MERF: differentially private mean embeddings with random features.

Harder, Adamczewski, Park, "DP-MERF: Differentially Private Mean Embeddings with Random
Features for Practical Privacy-Preserving Data Generation", AISTATS 2021.

Sphere random Fourier features of a Gaussian kernel (bandwidth σ0, a public per-dataset
constant), class-conditional mean embedding released once with the Gaussian mechanism
(sensitivity 2/n) together with the class proportions (√2/n), then a generator trained to
minimise ‖Ẽ − E_G‖²_F against the release only. All of the machinery is shared with PEARL in
:mod:`dpsynth.methods.oneshot`; DP-MERF is that machinery with uniform frequency weights.
"""

from __future__ import annotations

from dpsynth.methods.oneshot import EmbeddingMethod


class DPMERF(EmbeddingMethod):
    """DP-MERF (``method=dpmerf``)."""

    name = "dpmerf"
    version = "dpmerf-1"  # bump rule: Method's docstring

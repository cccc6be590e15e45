"""MST (``method=mst``): McKenna, Miklau, Sheldon, "Winning the NIST Contest: A scalable and
general approach to differentially private synthetic data", Journal of Privacy and
Confidentiality 11(3), 2021.

The mechanism (``release``, the only code that reads the private rows), with the budget split
in three equal parts of 1/m_total² (what the load-time releases left), i.e. the paper's ρ/3:

1. **1-way marginals** of every attribute (label included), each a Gaussian release with 1/d
   of the first third.
2. **Domain compression** (public: post-processing of step 1): levels whose noisy count is
   below 3σ are merged into one level per attribute.
3. **Selection** of a spanning tree: the score of a pair (a, b) is ‖M_ab(D) − M̂_ab‖₁, the L1
   distance between its (compressed) 2-way marginal and the independence estimate from the
   noisy 1-ways. The vector of all pair scores is released **once** with the Gaussian
   mechanism (L2 sensitivity Δ₁·√(#pairs), Δ₁ = 1 add/remove, 2 replace-one) with the second
   third, and the tree is the maximum spanning tree of the noisy scores (Kruskal; post-
   processing). The paper instead runs d − 1 exponential mechanisms inside Kruskal's loop,
   each at ε = √(8ρ/3/(d−1)); see :mod:`dpsynth.methods.marginals` for why a Gaussian here.
4. **2-way marginals** of the d − 1 tree edges, each a Gaussian release with 1/(d − 1) of the
   last third (the last one takes exactly what is left).

Training (post-processing of the release): Private-PGM fits a tree-structured graphical model
to all noisy marginals (``steps`` mirror-descent iterations; the paper's 5,000 by default),
then samples rows (randomized rounding), merged levels drawn uniformly among their members.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from dpsynth.errors import ConfigError
from dpsynth.methods.marginals import (
    MB,
    Discretiser,
    Ledgered,
    MarginalMethod,
    Measurement,
    apply_mappings,
    compress_mapping,
    compressed_sizes,
    marginal,
)


class MST(MarginalMethod):
    """MST (``method=mst``): see the module docstring."""

    name = "mst"
    version = "mst-1"

    def __init__(
        self,
        *,
        bins: int = 32,
        compress: bool = True,
        steps: int = 5000,
        max_model_size: float = 80.0,
        preset_selection: str = "authors",  # provenance label for dpsynth-report
    ) -> None:
        super().__init__(
            bins=bins, steps=steps, max_model_size=max_model_size, preset_selection=preset_selection
        )
        self.compress = bool(compress)

    def public_params(self) -> dict[str, Any]:
        return {"bins": self.bins, "compress": self.compress}

    def size_guard(self, sizes: dict[str, int], kinds: dict[str, str]) -> None:
        """The tree MST may pick is unknown before the run: refuse a domain whose worst tree
        (the maximum spanning tree of the pairs' cell counts) exceeds ``max_model_size``."""
        names = sorted(sizes, key=lambda a: -sizes[a])
        if len(names) < 2:
            return
        # Prim on the complete graph of cell counts: the heaviest possible tree.
        inside, total = {names[0]}, 0
        while len(inside) < len(names):
            a, b = max(
                ((u, v) for u in inside for v in names if v not in inside),
                key=lambda e: sizes[e[0]] * sizes[e[1]],
            )
            total += sizes[a] * sizes[b]
            inside.add(b)
        mb = total * MB
        if mb > self.max_model_size:
            big = names[0]
            raise self._too_big(
                big,
                kinds.get(big, "categorical"),
                sizes[big],
                "the largest tree of 2-way marginals MST may select",
                mb,
            )

    def mechanism(
        self, codes: np.ndarray, disc: Discretiser, ledger: Ledgered, n: int | None
    ) -> tuple[list[Measurement], dict[str, Any]]:
        names, sizes = disc.names, disc.sizes
        d = len(names)
        third = ledger.left / 3.0
        if third <= 0:
            raise ConfigError("the load-time releases used the whole budget; nothing is left.")
        # 1. every 1-way marginal
        ones = [
            ledger.measure(f"1way:{a}", marginal(codes, [j], sizes), third / d, (a,))
            for j, a in enumerate(names)
        ]
        # 2. domain compression (public: from the noisy 1-ways)
        mappings: dict[str, list[int] | None] = {}
        for m in ones:
            mapping = compress_mapping(m.values, m.stddev) if self.compress else None
            mappings[m.clique[0]] = None if mapping is None else mapping.tolist()
            m.compress = mapping is not None
        csizes = compressed_sizes(names, sizes, mappings)
        ccodes = apply_mappings(codes, names, mappings)
        # 3. the tree: noisy scores of every pair, maximum spanning tree
        pairs = list(itertools.combinations(range(d), 2))
        if len(pairs) > d - 1:  # with 2 attributes the tree is forced: nothing to select
            total = float(n) if n is not None else _total(ones)
            probs = [_probabilities(m, mappings.get(m.clique[0])) for m in ones]
            scores = np.array(
                [
                    np.abs(
                        marginal(ccodes, [i, j], csizes)
                        - total * np.outer(probs[i], probs[j]).ravel()
                    ).sum()
                    for i, j in pairs
                ]
            )
            noisy = ledger.noisy("mst-select:pair-scores", scores, np.ones(len(pairs)), third)
            edges = _max_spanning_tree(d, pairs, noisy)
        else:
            edges = pairs
        # 4. the tree's 2-way marginals; the last one takes what is left
        twos = []
        for k, (i, j) in enumerate(edges):
            units = None if k == len(edges) - 1 else third / len(edges)
            clique = (names[i], names[j])
            twos.append(
                ledger.measure(
                    f"2way:{names[i]},{names[j]}", marginal(ccodes, [i, j], csizes), units, clique
                )
            )
        return ones + twos, {"mappings": mappings, "tree": [[names[i], names[j]] for i, j in edges]}


def _total(ones: list[Measurement]) -> float:
    """Add/remove (n private): the inverse-variance mean of the noisy 1-ways' sums."""
    est = np.array([m.values.sum() for m in ones])
    var = np.array([m.stddev**2 * m.values.size for m in ones])
    return max(1.0, float(np.average(est, weights=1.0 / var)))


def _probabilities(m: Measurement, mapping: list[int] | None) -> np.ndarray:
    """Independence estimate of one attribute (on the compressed domain) from its noisy 1-way:
    merged levels summed, negatives clipped, normalised."""
    y = np.asarray(m.values, dtype=np.float64)
    if mapping is not None:
        y = np.bincount(np.asarray(mapping), weights=y, minlength=int(max(mapping)) + 1)
    y = np.clip(y, 0.0, None)
    s = y.sum()
    return y / s if s > 0 else np.full(len(y), 1.0 / len(y))


def _max_spanning_tree(
    d: int, pairs: list[tuple[int, int]], weights: np.ndarray
) -> list[tuple[int, int]]:
    """Kruskal on the (noisy) weights, heaviest first; ties by pair order."""
    parent = list(range(d))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = []
    for k in np.argsort(-np.asarray(weights), kind="stable"):
        i, j = pairs[int(k)]
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            tree.append((i, j))
            if len(tree) == d - 1:
                break
    assert len(tree) == d - 1 and math.isfinite(float(np.sum(weights)))
    return tree

"""AIM (``method=aim``): McKenna, Mullins, Sheldon, Miklau, "AIM: An Adaptive and Iterative
Mechanism for Differentially Private Synthetic Data", PVLDB 15(11), 2022.

The mechanism (``release``, the only code that reads the private rows). Budget in units of
1/m² (a Gaussian of multiplier m is ρ = 1/(2m²)-zCDP; the run's total is 1/m_total² minus
what the load-time releases used), with the paper's schedule:

* Workload W: every clique of the sizes ``workload_degrees`` (default all 2- and 3-way
  marginals, label included as an attribute); candidates C: its downward closure, candidate c
  weighted w_c = Σ_{r∈W} |c ∩ r|.
* T = ``rounds``, default ``rounds_per_attribute``·d (the paper: 16·d; dpsynth's preset 4·d,
  a compute rule: see conf/method/aim.yaml), α = ``measure_share`` (0.9): a round measures at
  1/m² = α·U/T and selects at (1 − α)·U/T.
* Initialisation: every 1-way marginal measured; Private-PGM model fitted.
* Each round: if less than two rounds' worth is left, this round takes all of it (and is the
  last). Candidates are filtered by the **model-size guard**: c is kept if the model with c
  added fits in ``max_model_size``·(budget used so far, this round included)/U MB, or c is
  already inside the model's cliques. The next marginal is the candidate of largest quality
  q_c = w_c·(‖M_c(D) − M̂_c‖₁ − √(2/π)·σ·|c|) (M̂: the current model, σ: this round's
  measurement noise std, |c| its cells), chosen by a **Gaussian noisy max** (the whole score
  vector released with L2 sensitivity Δ₁·‖w‖₂; Δ₁ = 1 add/remove, 2 replace-one) instead of
  the paper's exponential mechanism (see :mod:`dpsynth.methods.marginals`); it is measured
  with the Gaussian mechanism and the model re-fitted (warm start, ``round_steps``).
* **Budget annealing**: when the measured marginal moved the model's estimate of it by at most
  √(2/π)·σ·|c| in L1, σ is halved and the selection's ε doubled (both steps' 1/m² × 4).

Training (post-processing of the release): Private-PGM fitted to all measurements (``steps``
mirror-descent iterations, 2,500 in the reference code), then sampled (randomized rounding).

Cost: every round projects the model on every small-enough candidate (NumPy variable
elimination) and re-fits it (JAX); the paper warns that AIM takes hours at its defaults.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpsynth.errors import ConfigError
from dpsynth.methods.marginals import (
    MB,
    Discretiser,
    Ledgered,
    MarginalMethod,
    Measurement,
    all_cliques,
    cells,
    estimate,
    marginal,
    model_size_mb,
    project_many,
)

log = logging.getLogger("dpsynth")


class AIM(MarginalMethod):
    """AIM (``method=aim``): see the module docstring."""

    name = "aim"
    version = "aim-1"

    def __init__(
        self,
        *,
        bins: int = 32,
        workload_degrees: Sequence[int] = (2, 3),
        rounds: int | None = None,
        rounds_per_attribute: int = 16,
        measure_share: float = 0.9,
        max_model_size: float = 80.0,
        round_steps: int = 1000,
        steps: int = 2500,
        preset_selection: str = "authors",  # provenance label for dpsynth-report
    ) -> None:
        super().__init__(
            bins=bins, steps=steps, max_model_size=max_model_size, preset_selection=preset_selection
        )
        try:
            degrees = sorted({int(k) for k in workload_degrees})
        except (TypeError, ValueError):
            degrees = []
        if not degrees or degrees[0] < 1:
            raise ConfigError(
                f"method.workload_degrees: got {workload_degrees!r}; a list of marginal sizes "
                "≥ 1, e.g. [2, 3] (all 2- and 3-way marginals)."
            )
        if rounds is not None and int(rounds) < 1:
            raise ConfigError(
                f"method.rounds: got {rounds}; null (rounds_per_attribute · d) or an integer ≥ 1."
            )
        if int(rounds_per_attribute) < 1:
            raise ConfigError(
                f"method.rounds_per_attribute: got {rounds_per_attribute}; an integer ≥ 1 "
                "(the paper: 16)."
            )
        self.rounds_per_attribute = int(rounds_per_attribute)
        if not 0 < float(measure_share) < 1:
            raise ConfigError(
                f"method.measure_share: got {measure_share}; the share of each round spent on "
                "the measurement (the rest selects) lies in (0, 1) (the paper: 0.9)."
            )
        if int(round_steps) < 1:
            raise ConfigError(f"method.round_steps: got {round_steps}; a positive integer.")
        self.degrees = degrees
        self.rounds = None if rounds is None else int(rounds)
        self.measure_share = float(measure_share)
        self.round_steps = int(round_steps)

    def public_params(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "workload_degrees": self.degrees,
            "rounds": self.rounds,
            "rounds_per_attribute": self.rounds_per_attribute,
            "measure_share": self.measure_share,
            "max_model_size": self.max_model_size,
            "round_steps": self.round_steps,
        }

    def size_guard(self, sizes: dict[str, int], kinds: dict[str, str]) -> None:
        """Refuse a column that cannot enter any marginal beyond its 1-way within the model
        budget (its smallest 2-way added to the 1-way model), or a 1-way model over it."""
        names = sorted(sizes, key=lambda a: -sizes[a])
        oneway = sum(sizes.values())
        if oneway * MB > self.max_model_size:
            big = names[0]
            raise self._too_big(
                big, kinds.get(big, "categorical"), sizes[big], "the 1-way model", oneway * MB
            )
        if len(names) < 2 or max(self.degrees) < 2:
            return
        for a in names:
            b = min((x for x in names if x != a), key=lambda x: sizes[x])
            mb = (oneway - sizes[a] - sizes[b] + sizes[a] * sizes[b]) * MB
            if mb > self.max_model_size:
                raise self._too_big(
                    a, kinds.get(a, "categorical"), sizes[a], "its smallest 2-way marginal", mb
                )

    def mechanism(
        self, codes: np.ndarray, disc: Discretiser, ledger: Ledgered, n: int | None
    ) -> tuple[list[Measurement], dict[str, Any]]:
        names, sizes = disc.names, disc.sizes
        size = dict(zip(names, sizes, strict=True))
        index = {a: j for j, a in enumerate(names)}
        d = len(names)
        workload = all_cliques(names, [k for k in self.degrees if k <= d])
        weights = _candidates(workload)
        cands = list(weights)
        answers: dict[tuple[str, ...], np.ndarray] = {}

        def answer(cl: tuple[str, ...]) -> np.ndarray:
            if cl not in answers:
                answers[cl] = marginal(codes, [index[a] for a in cl], sizes)
            return answers[cl]

        budget = ledger.left
        if budget <= 0:
            raise ConfigError("the load-time releases used the whole budget; nothing is left.")
        T = self.rounds or self.rounds_per_attribute * d
        alpha = self.measure_share
        u_meas, u_sel = alpha * budget / T, (1 - alpha) * budget / T
        ms = [ledger.measure(f"1way:{a}", answer((a,)), u_meas, (a,)) for a in names]
        model = estimate(names, sizes, ms, total=n, steps=self.round_steps)
        sizes_cache: dict[tuple, dict[tuple[str, ...], float]] = {}
        rounds, annealed, last = 0, 0, False
        t0 = time.perf_counter()
        while not last:
            rounds += 1
            rem = ledger.left
            if rem < 2 * (u_meas + u_sel) or rounds >= 100 * T:
                u_sel, last = (1 - alpha) * rem, True
            m_units = alpha * rem if last else u_meas
            used = (ledger.used - ledger.start) + u_sel + m_units
            limit = self.max_model_size * used / budget
            model_cliques = [tuple(c) for c in model.cliques]
            free = {
                s
                for c in model_cliques
                for k in range(1, len(c) + 1)
                for s in itertools.combinations(c, k)
            }
            known = sizes_cache.setdefault(tuple(sorted(model_cliques)), {})
            small = []
            for c in cands:
                if _canonical(c, free):
                    small.append(c)
                    continue
                if c not in known:
                    known[c] = model_size_mb(size, [*model_cliques, c])
                if known[c] <= limit:
                    small.append(c)
            sigma = ledger.l2 / math.sqrt(m_units)  # this round's measurement noise std
            est = project_many(model, small)
            w = np.array([weights[c] for c in small], dtype=np.float64)
            bias = math.sqrt(2 / math.pi) * sigma
            q = np.array(
                [
                    weights[c] * (np.abs(answer(c) - est[c]).sum() - bias * cells(size, c))
                    for c in small
                ]
            )
            chosen = small[ledger.noisy_max(f"aim-select:{rounds}", q, w, u_sel)]
            before = est[chosen]
            m = ledger.measure(
                f"{len(chosen)}way:{','.join(chosen)}",
                answer(chosen),
                None if last else u_meas,
                chosen,
            )
            ms.append(m)
            model = estimate(names, sizes, ms, total=n, steps=self.round_steps, warm_start=model)
            after = project_many(model, [chosen])[chosen]
            if not last and np.abs(after - before).sum() <= bias * cells(size, chosen):
                u_meas, u_sel = 4 * u_meas, 4 * u_sel  # σ / 2, selection ε × 2
                annealed += 1
            # public: the round's choice (post-processing of its noisy release) and its cost
            log.info(
                "aim round %d: %s of %d candidates, σ %.3g, budget used %.1f%%, %.1f s",
                rounds,
                ",".join(chosen),
                len(small),
                sigma,
                100 * (ledger.used - ledger.start) / budget,
                time.perf_counter() - t0,
            )
        return ms, {"rounds": rounds, "annealed": annealed}


def _canonical(c: tuple[str, ...], free: set[tuple[str, ...]]) -> bool:
    """Whether clique ``c`` (in attribute order) lies inside one of the model's cliques."""
    return c in free or any(tuple(p) in free for p in itertools.permutations(c))


def _candidates(workload: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """The downward closure of the workload, candidate c weighted Σ_{r∈W} |c ∩ r| (AIM's
    ``compile_workload``); cliques keep the attribute order."""
    out: dict[tuple[str, ...], float] = {}
    for r in workload:
        for k in range(1, len(r) + 1):
            for c in itertools.combinations(r, k):
                out.setdefault(c, 0.0)
    for c in out:
        out[c] = float(sum(len(set(c) & set(r)) for r in workload))
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))

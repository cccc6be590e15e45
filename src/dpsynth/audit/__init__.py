"""Empirical privacy audits: statistical lower bounds on the ε the real code provides.

The accountant (:mod:`dpsynth.privacy.accounting`) proves an *upper* bound on ε, provided the
code adds the noise it says with the sensitivity it declares. An audit checks the code: it runs
the real mechanism on neighbouring inputs that differ in a worst-case canary and certifies, with
a stated confidence, a *lower* bound on ε. A lower bound above the claim proves a bug.

Layering: this package sits *above* :mod:`dpsynth.methods` (it drives the methods' public entry
points) and :mod:`dpsynth.privacy` (the accountant it compares with); neither imports it.

* :mod:`dpsynth.audit.common` — the statistics (Clopper–Pearson threshold test, Gaussian-DP μ
  confidence bounds, the one-run bound of Steinke, Nasr, Jagielski 2023) and config plumbing.
* :mod:`dpsynth.audit.oneshot` — PEARL / DP-MERF releases at production shapes.
* :mod:`dpsynth.audit.dpsgd` — DP-SGD: one full-batch step, and a multi-step Poisson-sampled
  training run with many gradient canaries (one-run audit).
* :mod:`dpsynth.audit.cli` — the ``dpsynth-audit`` command.
"""

"""End to end: every method YAML × every dataset YAML on tiny files in the real formats, the run
folder it writes, and the config validation that runs before any work."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict
from omegaconf.errors import ValidationError

from dpsynth.config import selection_for
from dpsynth.errors import ConfigError, DataError
from dpsynth.methods.base import Method
from dpsynth.methods.oneshot import EmbeddingMethod
from dpsynth.pipeline import build_method, critic_flags, peak_rss_mb, reset_peak_rss, run
from tests.conftest import DATASETS, METHODS, compose_config, shrink

# AIM on the tiny Adult files (~45 s) is also run end to end in test_marginal_methods.
_SLOW_E2E = {("adult", "aim")}
E2E = [
    pytest.param(d, m, id=f"{m}-{d}", marks=[pytest.mark.slow] if (d, m) in _SLOW_E2E else [])
    for m in METHODS
    for d in DATASETS
]


@pytest.mark.parametrize(("dataset", "method"), E2E)
def test_end_to_end(tiny_config, tmp_path, dataset: str, method: str) -> None:
    cfg = tiny_config(dataset, method)
    run_dir = tmp_path / "run"
    kind = "tabular" if dataset in ("adult", "csv") else "image"
    if kind not in build_method(cfg).kinds:  # e.g. the marginal methods on images
        with pytest.raises(ConfigError, match="does not support"):
            run(cfg, run_dir)
        assert not (run_dir / "metrics.json").exists()
        return
    label = str(cfg.method.get("preset_selection") or "")
    if build_method(cfg).private and selection_for(label, dataset) is None:
        # chosen on this dataset's training split (e.g. pearl_tuned, dpsgd on MNIST): refused
        with pytest.raises(ConfigError, match="preset_selection"):
            run(cfg, run_dir)
        assert not (run_dir / "metrics.json").exists()
        return
    record = run(cfg, run_dir)
    assert record["status"] == "completed"
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(record))  # what's returned is what's written
    assert on_disk["method"] == method and on_disk["dataset"] == dataset
    priv = on_disk["privacy"]
    assert priv["epsilon"] == 1.0 and priv["delta"] == cfg.dataset.delta  # the dataset's δ
    if build_method(cfg).private:
        assert 0 < priv["epsilon_spent"] <= 1.0 and 0 < priv["epsilon_exact"] <= 1.0 + 1e-6
        assert priv["releases"]
        assert priv["neighbours"] == "replace_one" and priv["accountant"] == "pld"
    assert on_disk["executor"]["kind"] == "local"
    assert all(
        k.startswith(("eval/real_", "eval/dcr", "eval/mia")) for k in on_disk["not_dp_metrics"]
    )
    assert on_disk["schema_source"] in ("declared", "dp")
    if build_method(cfg).one_shot:  # the run keeps the release it trained on
        assert (run_dir / "release.npz").exists() and len(on_disk["release"]["fingerprint"]) == 32
    assert on_disk["metrics"] and all(math.isfinite(v) for v in on_disk["metrics"].values())
    assert set(on_disk["higher_is_better"]) == set(on_disk["metrics"])
    assert {"load", "train", "sample", "evaluate", "total"} <= set(on_disk["timings"])
    assert on_disk["cpu_seconds"] > 0  # the compute bill the study report sums
    peaks = on_disk["peak_rss_mb_by_stage"]  # peak-so-far after each stage: non-decreasing
    stages = ["load", "train", "sample", "evaluate"]
    assert set(stages) <= set(peaks) and ("release" in peaks) == build_method(cfg).one_shot
    # Linux counts RSS per thread with some slack (split RSS counting): allow 2 MiB of jitter
    seq = [peaks[s] for s in stages]
    assert all(b >= a - 2.0 for a, b in itertools.pairwise(seq))
    assert peaks["evaluate"] <= on_disk["peak_rss_mb"]
    assert on_disk["versions"]["torch"]
    diag = on_disk["diagnostics"]
    if isinstance(build_method(cfg), EmbeddingMethod):  # its distance to the release's noise
        assert math.isfinite(diag["fit/discrepancy_ratio"]) and diag["fit/discrepancy_ratio"] > 0
    if method.startswith("pearl"):
        assert 1 <= diag["critic/effective_frequencies"] <= diag["critic/num_frequencies"] + 1e-6
    else:
        assert "critic/effective_frequencies" not in diag
    assert (run_dir / "config.json").exists()
    if dataset in ("adult", "csv"):
        table = pd.read_csv(run_dir / "synthetic.csv")
        assert len(table) == 60
    else:
        with np.load(run_dir / "samples.npz") as z:
            assert z["x"].shape[0] == 60 and z["x"].min() >= 0 and z["x"].max() <= 1
        assert (run_dir / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_method_names_match_their_yaml(tmp_path) -> None:
    # One name per concept: conf/method/<name>.yaml builds a Method whose name is <name>.
    for name in METHODS:
        cfg = compose_config([f"method={name}"], tmp_path)
        method = build_method(cfg)
        assert isinstance(method, Method) and method.name == name


def test_pearl_preset_uses_the_authors_loss_scale(tmp_path) -> None:
    # Authors: 500·Σ α_i ℓ_i with Σ α = 1; ours: loss_scale·Σ k·α_i ℓ_i, so loss_scale = 500/k.
    method = compose_config(["method=pearl"], tmp_path).method
    assert method.loss_scale * method.num_features == pytest.approx(500.0)
    assert (method.batch_size, method.steps, method.lr) == (100, 3000, 0.01)
    assert (method.critic_lr, method.critic_every, method.scheduler) == (0.01, 5, "constant")


def test_rerun_reuses_the_release(tiny_config, tmp_path) -> None:
    cfg = tiny_config("digits", "pearl")
    first = run(cfg, tmp_path / "a")
    second = run(cfg, tmp_path / "b")
    assert not first["privacy"]["cache_hit"] and second["privacy"]["cache_hit"]
    # one spend each of the σ0² estimate and the embedding, recorded once, re-spent never
    assert second["privacy"]["releases"] == first["privacy"]["releases"]
    assert [r["statistic"] for r in first["privacy"]["releases"]] == [
        "mean_sq_norm+mean",
        "embedding",
    ]


def test_an_ablation_can_share_the_release_of_the_run_it_ablates(tiny_config, tmp_path) -> None:
    """``method.release_of``: the critic-off row trains on PEARL's own release (a paired
    ablation, nothing spent again); without it, it draws a release of its own."""
    pearl = run(tiny_config("digits", "pearl"), tmp_path / "pearl")
    off = ("+method.name=pearl_critic_off", "method.critic=false")
    paired = run(tiny_config("digits", "pearl", *off, "method.release_of=pearl"), tmp_path / "p")
    own = run(tiny_config("digits", "pearl", *off), tmp_path / "own")
    assert paired["method"] == own["method"] == "pearl_critic_off"
    assert paired["privacy"]["cache_hit"] and not own["privacy"]["cache_hit"]
    assert paired["release"]["fingerprint"] == pearl["release"]["fingerprint"]
    assert own["release"]["fingerprint"] != pearl["release"]["fingerprint"]
    assert paired["privacy"]["releases"] == pearl["privacy"]["releases"]
    with pytest.raises(ConfigError, match="method.release_of"):
        build_method(tiny_config("digits", "pearl", "method.release_of=a/b"))


@pytest.mark.parametrize(("eval_name", "kept"), [("fast", False), ("default", True)])
def test_private_records_dropped_after_release_unless_evaluation_reads_them(
    tmp_path, monkeypatch, eval_name: str, kept: bool
) -> None:
    import dpsynth.pipeline as pipeline

    cfg = shrink(compose_config(["dataset=digits", "method=pearl", f"eval={eval_name}"], tmp_path))
    seen = {}
    real_train = pipeline.train_generator

    def spy(method, data, *args, **kwargs):  # noqa: ANN001, ANN202
        out = real_train(method, data, *args, **kwargs)
        seen["n_after"] = len(data.train_x)
        return out

    monkeypatch.setattr(pipeline, "train_generator", spy)
    with open_dict(cfg):
        cfg.dataset.n_synthetic = None  # n = n_train, read before the records are dropped
    if eval_name == "default":  # keep the tiny run quick: no Inception here
        with open_dict(cfg):
            cfg.eval.fid.enabled = cfg.eval.kid.enabled = False
            cfg.eval.classifiers = ["logreg"]
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    assert (seen["n_after"] > 0) == kept
    assert len(np.load(tmp_path / "run" / "samples.npz")["y"]) == 1437  # n_synthetic = n_train


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("privacy.epsilon=0", "privacy.epsilon"),
        ("privacy.epsilon=-2", "privacy.epsilon"),
        ("privacy.epsilon=inf", "privacy.epsilon"),
        ("privacy.delta=0", "privacy.delta"),
        ("privacy.delta=1.5", "privacy.delta"),
        ("privacy.accountant=moments", "privacy.accountant"),
        ("method.class_counts=maybe", "class_counts"),
        ("method.steps=0", "method.steps"),
    ],
)
def test_bad_values_fail_before_any_output(tiny_config, tmp_path, override, match) -> None:
    cfg = tiny_config("digits", "pearl", override)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        run(cfg, run_dir)
    assert not run_dir.exists()


def test_wrong_type_and_unknown_choice_fail_at_composition(tmp_path) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["privacy.epsilon=abc"], tmp_path)
    assert isinstance(info.value.__cause__, ValidationError)
    assert "privacy.epsilon" in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="pearl"):
        compose_config(["method=nosuch"], tmp_path)  # lists the valid options
    with pytest.raises(ConfigCompositionException, match="digits"):
        compose_config(["dataset=nosuch"], tmp_path)


def test_missing_data_folder_names_files(tiny_config, tmp_path) -> None:
    cfg = tiny_config("mnist", "pearl", f"data_dir={tmp_path / 'nothing'}")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sigma0_must_be_public_constant(tiny_config, tmp_path) -> None:
    cfg = tiny_config("digits", "pearl")
    with open_dict(cfg):
        cfg.dataset.sigma0_sq = None
    with pytest.raises(ConfigError, match="sigma0_sq"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_failure_after_start_is_recorded(tiny_config, tmp_path, monkeypatch) -> None:
    from dpsynth.methods.oneshot import EmbeddingMethod

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(EmbeddingMethod, "train", broken)
    with pytest.raises(RuntimeError):
        run(tiny_config("digits", "pearl"), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "disk on fire" in record["error"]
    assert not record["metrics"]


def test_peak_rss_is_per_job_after_a_reset() -> None:
    # A sweep runs its jobs in one process: each job's peak must not include the previous one's.
    big = np.ones(40_000_000)  # 320 MB touched
    before = peak_rss_mb()
    del big
    if not reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak-RSS mark")
    assert peak_rss_mb() < before - 200


def test_critic_collapse_is_flagged() -> None:
    assert critic_flags({}) == []
    ok = {"critic/effective_frequencies": 900.0, "critic/num_frequencies": 1500.0}
    assert critic_flags(ok) == []
    bad = {"critic/effective_frequencies": 1.4, "critic/num_frequencies": 1500.0}
    assert critic_flags(bad) == ["critic_collapse"]


def test_git_sha_marks_uncommitted_changes(tmp_path) -> None:
    """A record made from modified tracked code says so (``-dirty``); a clean tree gives the
    bare commit; outside a checkout there is none."""
    import subprocess

    from dpsynth.records import git_sha

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert git_sha(tmp_path) is None
    git("init", "-q")
    (tmp_path / "m.py").write_text("x = 1\n")
    git("add", "m.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    clean = git_sha(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "m.py").write_text("x = 2\n")
    assert git_sha(tmp_path) == clean + "-dirty"
    (tmp_path / "new.py").write_text("")  # untracked files do not make it dirty
    (tmp_path / "m.py").write_text("x = 1\n")
    assert git_sha(tmp_path) == clean

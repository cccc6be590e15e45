"""CelebA's δ policy: the dataset YAML's default δ is the published comparisons' δ and below
1/n for the real training split; the composed config takes it; an override is honoured; and
δ ≥ 1/n is refused before any output, naming privacy.delta. Offline, tiny generated data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from dpsynth import pipeline
from dpsynth.config import CONF_DIR
from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError
from dpsynth.pipeline import run
from tests.conftest import compose_config

CELEBA_TRAIN = 162_770  # images in partition 0 of the real list_eval_partition.txt
PUBLISHED = CONF_DIR.parent / "experiments" / "celeba" / "published.csv"


def celeba_yaml():
    return OmegaConf.load(CONF_DIR / "dataset" / "celeba.yaml")


def test_default_delta_is_below_one_over_n_and_the_published_one() -> None:
    yaml = celeba_yaml()
    delta = float(yaml.delta)
    assert delta == 1e-6
    assert delta < 1.0 / CELEBA_TRAIN  # 1/n ≈ 6.1e-6: the usual 1e-5 would be refused
    for key in ("delta", "n_synthetic", "image_size", "attribute"):
        assert str(yaml.provenance[key]).strip(), key
    assert "DPDM" in yaml.provenance.delta and "1e-6" in yaml.provenance.delta
    published = pd.read_csv(PUBLISHED)
    assert set(published["dataset"]) == {"celeba"}
    comparable = ~published["source"].str.contains("not comparable")
    assert comparable.sum() >= 5
    assert set(published.loc[comparable, "delta"]) == {delta}  # the YAML's δ is theirs
    assert (published.loc[~comparable, "delta"] > delta).all()  # others say why they differ


@pytest.mark.parametrize("privacy", ["eps0.2", "eps1", "eps10"])
def test_composed_config_takes_the_dataset_delta(tmp_path, privacy: str) -> None:
    cfg = compose_config(["dataset=celeba", f"privacy={privacy}"], tmp_path)
    assert cfg.privacy.delta == cfg.dataset.delta == 1e-6
    assert OmegaConf.to_container(cfg, resolve=True)["privacy"]["delta"] == 1e-6


def test_delta_override_is_honoured(tiny_config, tmp_path) -> None:
    cfg = compose_config(["dataset=celeba", "privacy.delta=5e-7"], tmp_path)
    assert cfg.privacy.delta == 5e-7 and cfg.dataset.delta == 1e-6
    # end to end on a tiny CelebA (12 training images): the run spends at the overridden δ
    cfg = tiny_config("celeba", "dpmerf", "privacy.delta=2e-6")
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["privacy"]["delta"] == 2e-6
    assert 0 < on_disk["privacy"]["epsilon_spent"] <= 1.0


@pytest.mark.parametrize("delta", ["0.1", str(1.0 / 12)])
def test_delta_at_or_above_one_over_n_is_refused(tiny_config, tmp_path, delta: str) -> None:
    cfg = tiny_config("celeba", "dpmerf", f"privacy.delta={delta}")  # n = 12: 1/n ≈ 0.083
    with pytest.raises(ConfigError, match=r"privacy\.delta") as info:
        run(cfg, tmp_path / "run")
    assert "1/12" in str(info.value)  # names n
    assert not (tmp_path / "run").exists()  # refused before any output


def test_real_celeba_size_refuses_the_usual_1e5(tiny_config, tmp_path, monkeypatch) -> None:
    """At CelebA's real n the old universal δ = 1e-5 is ≥ 1/n and is refused; no JPEGs needed:
    the loader is replaced by 162,770 tiny records of CelebA's spec."""
    rng = np.random.default_rng(0)
    spec = DataSpec("celeba", "image", (3, 4, 4), 2, ("not Male", "Male"))
    big = Dataset(
        spec=spec,
        train_x=rng.random((CELEBA_TRAIN, 3, 2, 2), dtype=np.float32),
        train_y=np.arange(CELEBA_TRAIN) % 2,
        test_x=rng.random((10, 3, 2, 2), dtype=np.float32),
        test_y=np.arange(10) % 2,
    )
    monkeypatch.setattr(pipeline, "load_data", lambda cfg: big)
    cfg = tiny_config("celeba", "dpmerf", "privacy.delta=1e-5")
    with pytest.raises(ConfigError, match=r"privacy\.delta") as info:
        run(cfg, tmp_path / "run")
    assert str(CELEBA_TRAIN) in str(info.value)
    assert not (tmp_path / "run").exists()

"""Shared fixtures: compose the *real* Hydra config, shrink it, and point every dataset at tiny
files in the real formats, so each conf/method × conf/dataset YAML is tested as it exists."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from dpsynth.config import CONF_DIR, group_options
from tests.datagen import write_adult, write_celeba, write_csv, write_idx_dataset

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))

METHODS = group_options("method")
DATASETS = group_options("dataset")

# Method options that make a run tiny; only keys a method's YAML actually has are set.
TINY_METHOD = {
    "steps": 4,
    "num_features": 16,
    "batch_size": 10,
    "checkpoint_every": 0,
    "epochs": 1,
    "max_steps": 4,
    "hidden": 16,
}


def tiny_dataset_overrides(name: str, tmp: Path) -> list[str]:
    """Overrides pointing dataset ``name`` at tiny generated files under ``tmp``."""
    if name in ("mnist", "fashion_mnist"):
        root = write_idx_dataset(tmp / name, n_train=60, n_test=30)
        return [f"data_dir={root}"]
    if name == "celeba":
        root = write_celeba(tmp / "celeba", n=24, size=(24, 30))
        return [f"data_dir={root}", "dataset.image_size=8"]
    if name == "adult":
        return [f"data_dir={write_adult(tmp / 'adult', n_train=80, n_test=40)}"]
    if name == "csv":
        path = write_csv(tmp / "table.csv", n=80)
        # the label set and column kinds are public here (declared); bounds are DP-inferred
        return [
            f"dataset.path={path}",
            "dataset.target=label",
            "dataset.categorical=[color,city]",
            "dataset.schema={label:{categories:[no,yes]}}",
        ]
    return []


def compose_config(overrides: list[str], tmp: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"cache_dir={tmp / 'cache'}", "logger=none", *overrides])
    return cfg


def shrink(cfg: DictConfig, keep: tuple[str, ...] = ()) -> DictConfig:
    """Make the run tiny, leaving alone the method keys named in ``keep`` (explicit overrides)."""
    with open_dict(cfg):
        for key, value in TINY_METHOD.items():
            if key in cfg.method and f"method.{key}" not in keep:
                cfg.method[key] = value
        cfg.dataset.n_synthetic = 60
        cfg.progress = False
        cfg.trainer.accelerator = "cpu"
    return cfg


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``tiny_config(dataset, method, *overrides)`` → the real config, shrunk, on tiny files."""

    def make(dataset: str, method: str, *overrides: str) -> DictConfig:
        extra = tiny_dataset_overrides(dataset, tmp_path)
        cfg = compose_config(
            [f"dataset={dataset}", f"method={method}", *extra, *overrides], tmp_path
        )
        return shrink(cfg, keep=tuple(o.split("=")[0] for o in overrides))

    return make

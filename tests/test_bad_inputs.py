"""The bad-input matrix: every way a user can get a run wrong ends in a non-zero exit with one
message naming the culprit and the fix, and leaves no misleading output behind."""

from __future__ import annotations

import errno
import gzip
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from dpsynth.errors import ConfigError, DataError, DpsynthError
from dpsynth.pipeline import run
from tests.conftest import METHODS, compose_config
from tests.datagen import write_celeba, write_csv, write_idx_dataset


def _truncate_idx(tmp: Path) -> list[str]:
    root = Path(write_idx_dataset(tmp / "m", n_train=40, n_test=20))
    f = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return ["dataset=mnist", f"data_dir={root}"]


def _corrupt_celeba(tmp: Path) -> list[str]:
    root = Path(write_celeba(tmp / "c", n=12, size=(24, 30)))
    jpg = sorted(root.rglob("*.jpg"))[0]
    jpg.write_bytes(b"\xff\xd8garbage")
    return ["dataset=celeba", f"data_dir={root}", "dataset.image_size=8"]


def _csv_with(tmp: Path, bad: str, col: str) -> list[str]:
    import pandas as pd

    path = Path(write_csv(tmp / "t.csv", n=40))
    frame = pd.read_csv(path)
    frame[col] = frame[col].astype(object)
    frame.loc[3, col] = bad
    frame.to_csv(path, index=False)
    return ["dataset=csv", f"dataset.path={path}", "dataset.target=label"]


def _csv_numeric_column(tmp: Path) -> list[str]:
    import pandas as pd

    path = Path(write_csv(tmp / "t.csv", n=40))
    numeric = [c for c, t in pd.read_csv(path).dtypes.items() if t.kind in "if" and c != "label"]
    return _csv_with(tmp, "not-a-number", numeric[0])


def _csv_unknown_test_category(tmp: Path) -> list[str]:
    import pandas as pd

    path = Path(write_csv(tmp / "t.csv", n=40))
    test = Path(write_csv(tmp / "test.csv", n=20, seed=1))
    frame = pd.read_csv(test)
    cats = [c for c, t in frame.dtypes.items() if t.kind not in "if" and c != "label"]
    frame[cats[0]] = frame[cats[0]].astype(object)
    frame.loc[0, cats[0]] = "never-seen-category"
    frame.to_csv(test, index=False)
    return [
        "dataset=csv",
        f"dataset.path={path}",
        f"dataset.test_path={test}",
        "dataset.target=label",
        f"dataset.categorical=[{','.join(cats)}]",
    ]


def _empty_class(tmp: Path) -> list[str]:
    root = write_idx_dataset(tmp / "e", n_train=40, n_test=20, num_classes=9)
    return ["dataset=mnist", f"data_dir={root}"]


def _not_a_folder(tmp: Path) -> Path:
    blocker = tmp / "a-file"
    blocker.write_text("x")
    return blocker / "sub"


CASES = {
    "epsilon_zero": (lambda t: ["privacy.epsilon=0"], ConfigError, "privacy.epsilon"),
    "epsilon_negative": (lambda t: ["privacy.epsilon=-1"], ConfigError, "privacy.epsilon"),
    "epsilon_inf_dp_method": (lambda t: ["privacy.epsilon=inf"], ConfigError, "nonprivate"),
    "delta_zero": (lambda t: ["privacy.delta=0"], ConfigError, "privacy.delta"),
    "delta_at_least_1_over_n": (lambda t: ["privacy.delta=0.01"], ConfigError, "1/n = 1/1437"),
    "unsupported_combination": (
        lambda t: [
            "dataset=celeba",
            f"data_dir={write_celeba(t / 'c', n=12, size=(24, 30))}",
            "dataset.image_size=10",
        ],
        ConfigError,
        "divisible by 4",
    ),
    "missing_data_folder": (
        lambda t: ["dataset=mnist", f"data_dir={t / 'nowhere'}"],
        DataError,
        "train-images-idx3-ubyte",
    ),
    "epsilon_below_a_rule": (
        lambda t: [
            "privacy.epsilon=0.5",
            "method.num_features='${dpsynth_by_epsilon:${privacy.epsilon},{1: 100}}'",
        ],
        ConfigError,
        "method.num_features (dpsynth_by_epsilon): privacy.epsilon 0.5 is below",
    ),
    "unbiased_loss_not_a_bool": (
        lambda t: ["method.unbiased_loss=maybe"],
        ConfigError,
        "method.unbiased_loss: got 'maybe'; allowed: true",
    ),
    "truncated_idx": (_truncate_idx, DataError, "train-images-idx3-ubyte.gz"),
    "corrupted_celeba": (_corrupt_celeba, DataError, ".jpg"),
    "cache_dir_not_writable": (
        lambda t: [f"cache_dir={_not_a_folder(t)}"],
        ConfigError,
        "cache_dir",
    ),
    "data_dir_not_writable_download": (
        lambda t: ["dataset=mnist", "dataset.download=true", f"data_dir={_not_a_folder(t)}"],
        DataError,
        "a-file",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(tmp_path, case: str) -> None:
    make, error, needle = CASES[case]
    overrides = make(tmp_path)
    cfg = compose_config(["method=pearl", "method.steps=2", *overrides], tmp_path)
    run_dir = tmp_path / "run"
    with pytest.raises(error) as info:
        run(cfg, run_dir)
    message = str(info.value)
    assert needle in message, message
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "samples.npz").exists()


@pytest.mark.parametrize(
    "make",
    [_csv_numeric_column, _csv_unknown_test_category, _empty_class],
    ids=lambda f: f.__name__,
)
def test_data_dependent_oddities_never_abort(tmp_path, make) -> None:
    """A run that stopped because a value or class was unseen in the private split would tell
    neighbouring datasets apart with certainty: such data load and run (values clipped or
    mapped to the column's "other", empty classes released as zeros plus noise)."""
    from tests.conftest import shrink

    cfg = compose_config(["method=pearl", "method.steps=2", *make(tmp_path)], tmp_path)
    record = run(shrink(cfg, keep=("method.steps",)), tmp_path / "run")
    assert record["status"] == "completed"


@pytest.mark.parametrize("group", ["dataset", "method", "eval"])
def test_unknown_names_list_valid_ones(tmp_path, group: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config([f"{group}=nosuch"], tmp_path)
    assert "Available options" in str(info.value) or "nosuch" in str(info.value)


@pytest.mark.skipif("dpsgd" not in METHODS, reason="needs method=dpsgd")
def test_batch_larger_than_dataset(tmp_path) -> None:
    cfg = compose_config(["method=dpsgd", "method.batch_size=100000"], tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_disk_full_while_writing_results(tmp_path, monkeypatch) -> None:
    from dpsynth import records
    from tests.conftest import shrink

    real = records.atomic_write_bytes

    def full(path, data):
        if Path(path).name in ("metrics.json", "samples.npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(records, "atomic_write_bytes", full)
    cfg = shrink(compose_config([], tmp_path))
    run_dir = tmp_path / "run"
    with pytest.raises(DpsynthError, match="No space left"):
        run(cfg, run_dir)
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "samples.npz").exists()
    assert not list(run_dir.glob(".*.tmp"))


def test_a_preset_chosen_on_this_datasets_data_is_refused(tmp_path) -> None:
    """pearl_tuned was selected on MNIST's training split (proxy mode, nothing paid): on MNIST
    itself that selection is an unaccounted look at the private data, so the run is refused
    before any release; on another dataset the same preset runs."""
    root = Path(write_idx_dataset(tmp_path / "m", n_train=40, n_test=20))
    cfg = compose_config(
        ["method=pearl_tuned", "method.steps=2", "dataset=mnist", f"data_dir={root}"], tmp_path
    )
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="preset_selection: proxy:mnist") as info:
        run(cfg, run_dir)
    assert "dpsynth-tune" in str(info.value)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "release.npz").exists()
    from tests.conftest import shrink

    cfg = compose_config(
        ["method=pearl_tuned", "dataset=fashion_mnist", f"data_dir={root}", "eval=fast"],
        tmp_path,
    )
    assert run(shrink(cfg), tmp_path / "run2")["status"] == "completed"

"""Empirical privacy signals of a synthetic set, reported beside the formal epsilon.

They prove nothing (epsilon does); they catch gross failures such as a generator that memorised
or copied its training records.

* Distance to closest record (DCR): the median distance from synthetic records to their nearest
  private training record, divided by the same median for real held-out (test) records. Both
  query sets look up the *same full* training set, so the ratio is free of the reference-size
  effect (a bigger set has closer neighbours by itself) and a copied record is always found.
  About 1 when synthetic records are no closer to the training data than unseen real records
  are; near 0 for a copy of the training set; above 1 for samples far from the data.
* Distance-based membership inference: each real record is scored by minus its distance to the
  nearest synthetic record (all of them); the attack's ROC-AUC for telling training records
  (members) from test records (non-members), equal-sized seeded subsamples. 0.5 is chance,
  1.0 means membership is fully exposed.

Only the queries are subsampled (``n``, seeded); subsampling the reference sets instead would
hide copies (a copied record is found only if its original was drawn too). These are the only
evaluation functions that read the private training split.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from dpsynth.errors import DataError


def _as_rows(x: np.ndarray | Tensor) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t.reshape(t.shape[0], -1)  # (N, D): images are flattened


def _subsample(x: Tensor, n: int | None, gen: torch.Generator) -> Tensor:
    if n is None or n >= x.shape[0]:
        return x
    return x[torch.randperm(x.shape[0], generator=gen)[:n]]


def nearest_distance(queries: Tensor, reference: Tensor, *, chunk: int = 256) -> Tensor:
    """Euclidean distance from each query row to its nearest reference row.

    Processes ``chunk`` queries at a time so the (chunk, M) distance block stays small
    (256 x 60k floats = 61 MB).

    Args:
        queries: (N, D).
        reference: (M, D).

    Returns:
        (N,) float32 distances.
    """
    if reference.shape[0] == 0:
        raise DataError("nearest-record distance needs a non-empty reference set.")
    if queries.shape[1] != reference.shape[1]:
        raise DataError(
            f"nearest-record distance: queries have {queries.shape[1]} features, reference "
            f"{reference.shape[1]}; both must use the dataset's encoding."
        )
    ref = reference.float()
    out = [torch.cdist(q.float(), ref).amin(dim=1) for q in queries.split(chunk)]
    return torch.cat(out) if out else torch.empty(0)


def dcr(
    synthetic: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    n: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Median distance to the closest training record: synthetic vs held-out real records.

    Args:
        synthetic: (Ns, ...) synthetic records.
        train: (Nt, ...) private training records (the full set is the reference).
        test: (Nv, ...) real held-out records, same layout.
        n: number of synthetic and of test queries (seeded subsamples).
        seed: subsampling seed.

    Returns:
        ``dcr_synthetic`` (median synthetic -> train), ``dcr_holdout`` (median test -> train)
        and ``dcr_ratio`` = dcr_synthetic / dcr_holdout.
    """
    gen = torch.Generator().manual_seed(seed)
    tr = _as_rows(train)
    d_syn = nearest_distance(_subsample(_as_rows(synthetic), n, gen), tr).median().item()
    d_hold = nearest_distance(_subsample(_as_rows(test), n, gen), tr).median().item()
    ratio = d_syn / d_hold if d_hold > 0 else float("nan")
    return {"dcr_synthetic": d_syn, "dcr_holdout": d_hold, "dcr_ratio": ratio}


def mia_auc(
    synthetic: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    n: int = 2000,
    seed: int = 0,
) -> float:
    """ROC-AUC of the nearest-synthetic-record membership attack.

    Members: ``min(n, Nt, Nv)`` training records; non-members: as many test records (seeded).
    Score: minus the distance to the nearest synthetic record (closer = "was trained on").
    """
    gen = torch.Generator().manual_seed(seed)
    syn, tr, te = _as_rows(synthetic), _as_rows(train), _as_rows(test)
    m = min(n, tr.shape[0], te.shape[0])
    members, non_members = _subsample(tr, m, gen), _subsample(te, m, gen)
    score = -torch.cat([nearest_distance(members, syn), nearest_distance(non_members, syn)])
    label = np.r_[np.ones(m), np.zeros(m)]
    return float(roc_auc_score(label, score.numpy()))


def privacy_metrics(
    synthetic: np.ndarray, train: np.ndarray, test: np.ndarray, *, n: int = 2000, seed: int = 0
) -> dict[str, float]:
    """DCR statistics and the membership-inference AUC (keys without the ``eval/`` prefix)."""
    out = dcr(synthetic, train, test, n=n, seed=seed)
    out["mia_auc"] = mia_auc(synthetic, train, test, n=n, seed=seed)
    return out

"""Evaluation of synthetic data: downstream utility, fidelity, FID/KID and empirical privacy.

Pure functions over arrays and tensors (the only file I/O is the FID reference cache), plus
:class:`~dpsynth.evaluation.suite.Evaluator`, which ``conf/eval/*.yaml`` instantiates and the
pipeline calls once per run. Metric keys are ``eval/<name>``; see ``suite.py`` for the list.
"""

from dpsynth.evaluation.classifiers import IMAGE_CLASSIFIERS, get_image_classifier
from dpsynth.evaluation.fid import (
    extract_features,
    fid_from_features,
    kid_from_features,
    load_inception,
    reference_features,
)
from dpsynth.evaluation.privacy_metrics import dcr, mia_auc, privacy_metrics
from dpsynth.evaluation.suite import Evaluator
from dpsynth.evaluation.tabular import (
    TABULAR_CLASSIFIERS,
    marginal_tvd,
    tabular_utility,
)

__all__ = [
    "IMAGE_CLASSIFIERS",
    "TABULAR_CLASSIFIERS",
    "Evaluator",
    "dcr",
    "extract_features",
    "fid_from_features",
    "get_image_classifier",
    "kid_from_features",
    "load_inception",
    "marginal_tvd",
    "mia_auc",
    "privacy_metrics",
    "reference_features",
    "tabular_utility",
]

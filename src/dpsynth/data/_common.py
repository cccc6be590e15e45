"""Checks and small helpers shared by every loader, so each rule is written once."""

from __future__ import annotations

import math
import os

import numpy as np

from dpsynth.errors import ConfigError


def check_fraction(key: str, value: float) -> float:
    """Validate a split fraction, which must leave records on both sides."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(
            f"{key}={value!r} is invalid: it must be a number strictly between 0 and 1 "
            "(e.g. 0.2 keeps 20% of the records as the test split)."
        )
    return float(value)


def check_seed(key: str, value: object) -> int:
    """Validate a split seed; numpy and scikit-learn accept 0..2**32-1."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not 0 <= int(value) < 2**32
    ):
        raise ConfigError(
            f"{key}={value!r} is invalid: it must be an integer in 0..2**32-1 (e.g. 0)."
        )
    return int(value)


def is_finite_number(value: object) -> bool:
    """A finite int or float (a bool is not a number here: ``True`` is a config mistake)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def check_positive_int(key: str, value: object, allow_none: bool = False) -> int | None:
    """Validate an optional positive integer argument such as ``max_train``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        allowed = "a positive integer or null" if allow_none else "a positive integer"
        raise ConfigError(f"{key}={value!r} is invalid: it must be {allowed}.")
    return int(value)


def expand_root(root: str | os.PathLike[str] | None) -> str:
    """Expand ``~`` and environment variables in a root folder; ``""`` stays ``""``."""
    if root is None:
        return ""
    if not isinstance(root, str | os.PathLike):
        raise ConfigError(f"dataset.root={root!r} is invalid: it must be a folder path string.")
    text = os.fspath(root)
    return os.path.expandvars(os.path.expanduser(text)) if text else ""

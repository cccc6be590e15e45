"""The project's own errors.

Every error a user can cause is raised as a :class:`DpsynthError` whose message names the
culprit (config key or file), the value received, what is allowed and what to do. The CLI
prints that one message and exits non-zero; nothing else is shown unless
``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations


class DpsynthError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(DpsynthError):
    """A config value is invalid (wrong type, out of range, unknown choice)."""


class DataError(DpsynthError):
    """A data file is missing, truncated, corrupted or inconsistent."""


class PrivacyError(DpsynthError):
    """A privacy budget cannot be met or backed by the accountant."""


class TrainingError(DpsynthError):
    """Training diverged (NaN/inf loss) or otherwise cannot produce a valid generator."""

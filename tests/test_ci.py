"""CI mirrors the README: the command a user runs is the command CI runs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    """The README line that .ci/run extracts and evaluates, found with .ci/run's own pattern."""
    script = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -m1 -E '([^']+)' README\.md", script)
    assert pattern, ".ci/run no longer reads its command from README.md"
    out = subprocess.run(
        ["grep", "-m1", "-E", pattern.group(1), "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    cmd = _ci_command()
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("```", 2)[1]
    assert cmd in setup.splitlines(), "CI's command is not README's set-up command"
    assert 'pip install -e ".[test]"' in cmd and cmd.endswith("python -m pytest -q")


def test_readme_install_has_what_the_suite_imports() -> None:
    """The launcher tests compose hydra/launcher=joblib|slurm: their plugins are in [test]."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_extra = " ".join(project["optional-dependencies"]["test"])
    for plugin in ("pytest", "hypothesis", "hydra-joblib-launcher", "hydra-submitit-launcher"):
        assert plugin in test_extra, f"{plugin} missing from the [test] extra README installs"

"""The version is written once, in ``calprompt.__version__``: pyproject.toml reads it, the CLI prints it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import calprompt
from calprompt.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_takes_the_version_from_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "calprompt.__version__"}


def test_cli_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"calprompt {calprompt.__version__}\n", result.output


def test_installed_metadata_agrees_with_the_package():
    try:
        installed = importlib.metadata.version("calprompt")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("calprompt is not installed (only on the path)")
    assert installed == calprompt.__version__


@pytest.mark.parametrize("module", ["calprompt", "calprompt.cli"])
def test_python_dash_m_runs_the_cli(module):
    """``python -m calprompt`` is the command line too (users on a cluster often have no scripts on PATH)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == f"calprompt {calprompt.__version__}\n", result.stderr

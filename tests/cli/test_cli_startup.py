"""Start-up: every ``--help`` answers without importing torch or open_clip (timings: benchmarks/bench_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Runs the CLI in-process on the given arguments, then reports which heavy modules got imported.
PROBE = """
import json, sys
from calprompt.cli import app
try:
    app(sys.argv[1:], prog_name="calprompt")
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "open_clip", "numpy") if m in sys.modules)}))
"""


def _commands() -> list[list[str]]:
    from typer.main import get_command

    from calprompt.cli import app

    root = get_command(app)
    commands = [[]]
    for name, command in root.commands.items():
        commands.append([name])
        commands += [[name, sub] for sub in getattr(command, "commands", {})]
    return commands


@pytest.mark.parametrize("command", _commands(), ids=lambda command: " ".join(command) or "calprompt")
def test_help_does_not_import_torch(command):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(REPO / "src"), os.environ.get("PYTHONPATH", "")))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *command, "--help"], env=env, capture_output=True, text=True, timeout=120
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None), result.stdout
    assert report["heavy"] == []

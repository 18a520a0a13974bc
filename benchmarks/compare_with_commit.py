"""Check that a refactor changed no number: the same fixed-seed toy runs, made by an older commit's code and by the
new code, must write bit-for-bit equal results.

A refactor of the runner, the configs or the run directories should move code, not results. This script runs, once
with each side's code:

1. a single run: ``calprompt train --dataset toy --method coop --calibration ours --seed 1 --recipe fast --epochs N``;
2. a small grid:
   ``calprompt grid --dataset toy --run zeroshot --run coop:ours --seed 1 --seed 2 --shots 4 --recipe fast``,

and compares what they wrote:

- every ``metrics.json`` (the single run's and each grid run directory's, ``grid/runs/<run_id>/``; the run ids must be
  the same on both sides), after dropping only the fields that measure time (``DROPPED`` below, printed by the
  script): the loaded dicts must be equal after ``json.dumps(..., sort_keys=True)``; the table also says whether the
  raw file bytes are equal with those fields' values masked (key order, float spelling, indentation);
- every ``predictions.safetensors`` and ``prompt.safetensors``: the same tensor names, dtypes and shapes, and
  ``torch.equal`` values;
- the grid's ``tables.md``, byte for byte.

Each side is the ``src`` folder of a commit exported from this repository's history with ``git archive`` (as
``benchmarks/bench_run.py`` does), or the working tree's ``src``. Each side's commands run in their own subprocess,
``python -m calprompt.cli ...``, with ``PYTHONPATH`` set to that side's ``src`` (checked: the subprocess must import
calprompt from there, not from an installed copy), ``HF_HUB_OFFLINE=1``, and an empty feature cache of its own
(``CALPROMPT_CACHE``), so nothing computed by one side is reused by the other. The sides run one after the other with
the same environment (thread count included).

Usage (from any folder; the interpreter must have calprompt's dependencies)::

    python benchmarks/compare_with_commit.py [--old COMMIT] [--new COMMIT | --new-src PATH] [--epochs N] [--keep DIR]

``--old`` defaults to ``ea5ecb7`` (the last commit before the runner/config/run directory redesign), the new side to
this repository's working tree. Prints one line per compared file, "equal" or the first differing keys with both
values; exits 0 when everything is equal, 1 when anything differs, 2 when a side fails to run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import REPO, export_sources
from safetensors.torch import load_file

OLD_COMMIT = "ea5ecb7"
# Fields of metrics.json that measure time: they cannot be equal between two runs, so they are dropped (and, in the
# raw-bytes check, their values masked) before comparing. Nothing else is dropped.
DROPPED = (("run", "seconds"), ("train", "seconds"))
# The single run (its --epochs from the command line; 16 shots) and the grid (4 shots to keep it short; two seeds, so
# that tables.md has mean ± std).
TRAIN_ARGS = shlex.split("train --dataset toy --method coop --calibration ours --seed 1 --recipe fast")
GRID_ARGS = shlex.split("grid --dataset toy --run zeroshot --run coop:ours --seed 1 --seed 2 --shots 4 --recipe fast")
TENSOR_FILES = ("predictions.safetensors", "prompt.safetensors")
SHOWN = 3  # differing keys shown per file


def _resolve(commit: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"Unknown commit {commit} in {REPO}: {done.stderr.strip()}")
    return done.stdout.strip()


def _working_tree_label() -> str:
    head = _resolve("HEAD")
    changes = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"working tree {REPO / 'src'} (HEAD {head}{', with uncommitted changes in src' if changes else ''})"


class Side:
    """One side's code (``src``) and its output folder; runs the CLI in subprocesses with that code."""

    def __init__(self, name: str, src: Path, label: str, out: Path) -> None:
        self.name, self.src, self.label, self.out = name, src.resolve(), label, out
        self.cache = out / "cache"
        self.cache.mkdir(parents=True)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.src),
            "HF_HUB_OFFLINE": "1",
            "CALPROMPT_CACHE": str(self.cache),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _run(self, argv: list[str], log: str) -> str:
        done = subprocess.run(
            [sys.executable, *argv], cwd=self.out, env=self.env, capture_output=True, text=True, check=False
        )
        (self.out / log).write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            print(f"{self.name}: `python {' '.join(argv)}` failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
            raise SystemExit(2)
        return done.stdout

    def check_import(self) -> None:
        where = Path(self._run(["-c", "import calprompt; print(calprompt.__file__)"], "import.log").strip())
        if not where.resolve().is_relative_to(self.src):
            print(f"{self.name}: calprompt imported from {where}, not from {self.src}", file=sys.stderr)
            raise SystemExit(2)
        print(f"{self.name}: {self.label}; calprompt imported from {where}")

    def train(self, epochs: int) -> float:
        started = time.perf_counter()
        out = str(self.out / "train")
        self._run(["-m", "calprompt.cli", *TRAIN_ARGS, "--epochs", str(epochs), "--quiet", "--out", out], "train.log")
        return time.perf_counter() - started

    def grid(self) -> float:
        started = time.perf_counter()
        self._run(["-m", "calprompt.cli", *GRID_ARGS, "--quiet", "--out", str(self.out / "grid")], "grid.log")
        return time.perf_counter() - started


# ---------------------------------------------------------------- comparisons: each returns (verdict, equal)


def _drop(metrics: dict) -> list[str]:
    """Remove the ``DROPPED`` fields present in ``metrics`` (in place); returns their dotted names."""
    dropped = []
    for parent, key in DROPPED:
        if isinstance(metrics.get(parent), dict) and key in metrics[parent]:
            del metrics[parent][key]
            dropped.append(f"{parent}.{key}")
    return dropped


def _mask(text: str, count: int) -> str | None:
    """``text`` with the values of its ``"seconds": NUMBER`` fields replaced by null, if there are exactly ``count``
    of them (the dropped fields); else None (the raw check cannot mask exactly those fields)."""
    masked, found = re.subn(r'("seconds"\s*:\s*)-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?', r"\1null", text)
    return masked if found == count else None


def _differences(old, new, path: str = "") -> list[tuple[str, object, object]]:
    """Leaf paths where ``old`` and ``new`` differ (missing keys included), in sorted key order."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                found.append((where, old.get(key, "<missing>"), new.get(key, "<missing>")))
            else:
                found += _differences(old[key], new[key], where)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in _differences(a, b, f"{path}[{i}]")]
    same = json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)
    return [] if same else [(path, old, new)]


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def compare_metrics(old_path: Path, new_path: Path) -> tuple[str, bool]:
    texts = [old_path.read_text(), new_path.read_text()]
    loaded = [json.loads(text) for text in texts]
    dropped = [_drop(metrics) for metrics in loaded]
    if dropped[0] != dropped[1]:
        return f"time fields differ: old has {dropped[0]}, new has {dropped[1]}", False
    if json.dumps(loaded[0], sort_keys=True) != json.dumps(loaded[1], sort_keys=True):
        found = _differences(*loaded)
        shown = "; ".join(f"{key}: {_short(a)} != {_short(b)}" for key, a, b in found[:SHOWN])
        more = f" (+{len(found) - SHOWN} more)" if len(found) > SHOWN else ""
        return f"DIFFERS at {len(found)} keys: {shown}{more}", False
    masked = [_mask(text, len(names)) for text, names in zip(texts, dropped, strict=True)]
    if None in masked:
        raw = "raw bytes not checked (the time fields could not be masked exactly)"
    elif masked[0] == masked[1]:
        raw = "raw bytes equal too"
    else:
        raw = "raw bytes DIFFER (key order or number spelling)"
    return f"equal ({raw}; dropped {', '.join(dropped[0]) or 'nothing'})", True


def compare_tensors(old_path: Path, new_path: Path) -> tuple[str, bool]:
    old, new = load_file(old_path), load_file(new_path)
    if set(old) != set(new):
        return (
            f"DIFFERS: tensors only in old {sorted(set(old) - set(new))}, only in new {sorted(set(new) - set(old))}",
            False,
        )
    problems = []
    for name in sorted(old):
        a, b = old[name], new[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{name}: {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}")
        elif not torch.equal(a, b):
            gap = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            problems.append(f"{name}: {int((a != b).sum())} of {a.numel()} values differ (max |diff| {gap:.3g})")
    if problems:
        more = f" (+{len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        return f"DIFFERS in {len(problems)} tensors: {'; '.join(problems[:SHOWN])}{more}", False
    return f"equal ({len(old)} tensors, torch.equal)", True


def compare_bytes(old_path: Path, new_path: Path) -> tuple[str, bool]:
    old, new = old_path.read_bytes(), new_path.read_bytes()
    if old == new:
        return "equal (bytes)", True
    old_lines, new_lines = old.decode().splitlines(), new.decode().splitlines()
    for number, (a, b) in enumerate(zip(old_lines, new_lines, strict=False), 1):
        if a != b:
            return f"DIFFERS at line {number}: {_short(a)!r} != {_short(b)!r}", False
    return f"DIFFERS: {len(old_lines)} lines != {len(new_lines)} lines", False


def compare(old: Path, new: Path) -> list[tuple[str, str, bool]]:
    """(file, verdict, equal) rows for everything compared between the output folders ``old`` and ``new``."""
    rows: list[tuple[str, str, bool]] = []

    def one(relative: str, how) -> None:
        present = [(old / relative).is_file(), (new / relative).is_file()]
        if all(present):
            rows.append((relative, *how(old / relative, new / relative)))
        elif any(present):
            rows.append((relative, f"MISSING on the {'new' if present[0] else 'old'} side", False))
        else:
            rows.append((relative, "MISSING on both sides", False))

    run_dirs = ["train"]
    ids = [
        {p.name for p in (side / "grid" / "runs").iterdir() if p.is_dir()}
        if (side / "grid" / "runs").is_dir()
        else set()
        for side in (old, new)
    ]
    for run_id in sorted(ids[0] - ids[1]):
        rows.append((f"grid/runs/{run_id}/", "run directory on the old side only", False))
    for run_id in sorted(ids[1] - ids[0]):
        rows.append((f"grid/runs/{run_id}/", "run directory on the new side only", False))
    run_dirs += [f"grid/runs/{run_id}" for run_id in sorted(ids[0] & ids[1])]
    for run_dir in run_dirs:
        one(f"{run_dir}/metrics.json", compare_metrics)
        for name in TENSOR_FILES:
            if (old / run_dir / name).is_file() or (new / run_dir / name).is_file():
                one(f"{run_dir}/{name}", compare_tensors)
    one("grid/tables.md", compare_bytes)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=OLD_COMMIT, help="the old side's commit (default: %(default)s)")
    new = parser.add_mutually_exclusive_group()
    new.add_argument("--new", default=None, help="the new side's commit (default: this repository's working tree)")
    new.add_argument("--new-src", type=Path, default=None, help="the new side's src folder (any tree)")
    parser.add_argument("--epochs", type=int, default=10, help="the single run's epochs (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None, help="write (and keep) everything here (empty or new)")
    args = parser.parse_args()

    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep} is not empty (a finished run there would be reused, not rerun)")
        args.keep.mkdir(parents=True, exist_ok=True)
        folder = args.keep.resolve()
    else:
        folder = Path(tempfile.mkdtemp(prefix="calprompt-compare-"))
    try:
        status = _compare_sides(args, folder)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"outputs kept in {folder}")
    raise SystemExit(status)


def _compare_sides(args: argparse.Namespace, folder: Path) -> int:
    old_commit = _resolve(args.old)
    old_src = export_sources(old_commit, folder / "trees" / "old")
    sides = [Side("old", old_src, f"commit {old_commit} (exported)", folder / "old")]
    if args.new_src is not None:
        sides.append(Side("new", args.new_src, f"src folder {args.new_src.resolve()}", folder / "new"))
    elif args.new is not None:
        new_commit = _resolve(args.new)
        new_src = export_sources(new_commit, folder / "trees" / "new")
        sides.append(Side("new", new_src, f"commit {new_commit} (exported)", folder / "new"))
    else:
        sides.append(Side("new", REPO / "src", _working_tree_label(), folder / "new"))
    for side in sides:
        side.check_import()
    print(f"single run: calprompt {' '.join(TRAIN_ARGS)} --epochs {args.epochs}")
    print(f"grid: calprompt {' '.join(GRID_ARGS)}")
    for side in sides:
        seconds = side.train(args.epochs), side.grid()
        print(f"{side.name}: single run {seconds[0]:.1f} s, grid {seconds[1]:.1f} s", flush=True)
    dropped = ", ".join(".".join(field) for field in DROPPED)
    print(f"dropped from every metrics.json before comparing (time measurements): {dropped}")

    rows = compare(sides[0].out, sides[1].out)
    width = max(len(name) for name, _, _ in rows)
    print()
    print(f"{'file':<{width}}  result")
    for name, verdict, _ in rows:
        print(f"{name:<{width}}  {verdict}")
    differing = sum(not equal for _, _, equal in rows)
    print()
    if differing:
        print(f"{differing} of {len(rows)} compared files DIFFER between {sides[0].label} and {sides[1].label}")
        return 1
    raw = sum("raw bytes DIFFER" in verdict for _, verdict, _ in rows)
    note = f" ({raw} metrics.json files differ in raw bytes only: key order or number spelling)" if raw else ""
    print(f"all {len(rows)} compared files equal between {sides[0].label} and {sides[1].label}{note}")
    return 0


if __name__ == "__main__":
    main()

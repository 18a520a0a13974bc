"""What every benchmark shares: ``--device`` / ``--precision``, a line naming the hardware, and peak memory.

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU and the process's peak resident set size
(``resource.getrusage``) on the CPU. RSS is a high-water mark of the whole process, so comparisons of CPU memory
run each contender in its own subprocess (:func:`run_child`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRECISIONS = ("fp32", "bf16", "fp16")
REPO = Path(__file__).resolve().parents[1]


# Words of class names of realistic lengths (single words to multi-word fine-grained names).
WORDS = [
    "red",
    "tailed",
    "hawk",
    "boeing",
    "737",
    "sea",
    "lake",
    "apply",
    "eye",
    "makeup",
    "golden",
    "retriever",
    "exterior",
    "balcony",
    "annual",
    "crop",
    "land",
    "american",
    "pit",
    "bull",
    "terrier",
    "cheese",
    "plate",
]


def class_names(n: int = 100) -> list[str]:
    """``n`` seeded class names of one to four of these words."""
    generator = torch.Generator().manual_seed(0)
    names = []
    for _ in range(n):
        length = int(torch.randint(1, 5, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        names.append(" ".join(WORDS[i] for i in picks))
    return names


def add_device_arguments(parser: argparse.ArgumentParser, default_precision: str = "fp32") -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default=default_precision, choices=PRECISIONS, help="autocast precision")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")


def apply_threads(args: argparse.Namespace) -> list[str]:
    """Set torch's CPU threads from ``--threads``; returns the arguments that pass the setting to a child."""
    if args.threads is None:
        return []
    torch.set_num_threads(args.threads)
    return ["--threads", str(args.threads)]


def describe(device: str, precision: str) -> str:
    """One line naming what the benchmark runs on."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        where = f"{name} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"device: {device} = {where}; precision: {precision}; torch {torch.__version__}"


def reset_peak(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux this process's resident high-water mark (writing 5
    to /proc/self/clear_refs; elsewhere the CPU peak stays the process's since it started)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: str) -> float:
    """Peak memory since :func:`reset_peak`: allocated CUDA memory, or this process's peak RSS."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux; reset with VmHWM


def memory_kind(device: str) -> str:
    return "peak CUDA allocated" if device.startswith("cuda") else "peak RSS (own process, since its reset)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str, repeats: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls of ``fn`` (synchronised on GPU) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def time_alternating(
    contenders: dict[str, Callable[[], Any]],
    rounds: int,
    device: str,
    summary: Callable[[list[float]], float] = min,
) -> dict[str, float]:
    """Each contender's ``summary`` (best by default, or e.g. the median) of its times over ``rounds`` rounds of one
    call each, after a warm-up call each: a machine shared with other work slows every contender alike."""
    for run in contenders.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: summary(values) for name, values in times.items()}


def autocast(device: str, precision: str):
    from calprompt.engine.precision import autocast as calprompt_autocast

    return calprompt_autocast(device, precision)


#: glibc's malloc, left to itself, serves large tensors from its heap once a few have been freed (its mmap threshold
#: grows) and keeps the freed pages: a process that allocates and frees many different-sized activations reaches a
#: resident size several times its live tensors (the 1,000-class test-time reference: 23.9 GB resident, killed, for
#: about 3 GB live). A fixed threshold makes every tensor over 128 KiB its own mapping, returned when freed, so a
#: process high-water mark measures live memory again. Set for both sides of a comparison alike.
STEADY_HEAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def run_child(
    script: str | Path,
    args: list[str],
    timeout: float = 3600,
    src: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``script --child ...`` in a fresh Python process and return the JSON object it prints last.

    ``src``: the ``calprompt`` sources the child imports (default: this checkout's ``src``); ``env``: variables
    added to the child's environment (e.g. `STEADY_HEAP`).
    """
    src = REPO / "src" if src is None else Path(src)
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([str(src), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_sources(commit: str, folder: Path) -> Path:
    """The ``src`` tree of ``commit`` of this repository, extracted under ``folder``; returns its ``src``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "src.tar"
    done = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), commit, "src"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"Cannot export commit {commit} of {REPO} (a clone with its history is needed): {done.stderr}")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    archive.unlink()
    return folder / "src"

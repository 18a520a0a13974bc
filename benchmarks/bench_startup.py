"""Start-up: wall and CPU time of ``calprompt --help`` (and each command's ``--help``) in a fresh interpreter.

The command modules import torch and open_clip inside the command bodies, so help answers without them. Shown side
by side with what importing them costs (what every ``--help`` paid before: 5.7 s on a fresh clone, 2 cores), and
with a bare interpreter start. Medians over ``--repeat`` runs; CPU time is user + system of the child, which stays
meaningful on a busy machine where wall time includes waiting for a core. Target: ``calprompt --help`` < 0.5 s.

Usage: python benchmarks/bench_startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "calprompt --help": ["-m", "calprompt.cli", "--help"],
    "calprompt train --help": ["-m", "calprompt.cli", "train", "--help"],
    "calprompt datasets check --help": ["-m", "calprompt.cli", "datasets", "check", "--help"],
    "calprompt toy pretrain --help": ["-m", "calprompt.cli", "toy", "pretrain", "--help"],
    "import torch, open_clip (before)": ["-c", "import torch, open_clip"],
}


def measure(arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``arguments``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs, median of {repeat} runs")
    print(f"{'command':<36}{'wall s':>9}{'CPU s':>9}")
    results = {}
    for label, arguments in COMMANDS.items():
        measure(arguments)  # warm the file-system cache
        runs = [measure(arguments) for _ in range(repeat)]
        results[label] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        print(f"{label:<36}{results[label][0]:>9.3f}{results[label][1]:>9.3f}")
    help_wall, help_cpu = results["calprompt --help"]
    torch_wall, torch_cpu = results["import torch, open_clip (before)"]
    print(
        f"calprompt --help vs importing torch + open_clip: {torch_wall / help_wall:.1f}x less wall time, "
        f"{torch_cpu / help_cpu:.1f}x less CPU time; target < 0.5 s: {'met' if help_wall < 0.5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

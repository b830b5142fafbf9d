"""Benchmark: CPU seconds to start the CLI, against a bare interpreter in the same run.

Runs ``agentstream --help`` (and a few other commands that stop before any network I/O) and
``python -c pass`` ``--runs`` times each, alternating, and prints the median user+system CPU
seconds of each child process (``resource.getrusage(RUSAGE_CHILDREN)`` deltas, so the figure is
CPU, not wall time on a busy machine) and the ratio to the bare interpreter. The target is
``agentstream --help`` under 0.5 s of CPU.

    .venv/bin/python bench/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

TARGET_S = 0.5
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "agentstream --help": [sys.executable, "-m", "agentstream.cli", "--help"],
    "agentstream --version": [sys.executable, "-m", "agentstream.cli", "--version"],
    "agentstream worker --help": [sys.executable, "-m", "agentstream.cli", "worker", "--help"],
    "agentstream dlq replay --help": [
        sys.executable,
        "-m",
        "agentstream.cli",
        "dlq",
        "replay",
        "--help",
    ],
}


def cpu_of(argv: list[str], env: dict[str, str], cwd: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env["COLUMNS"] = "100"
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:  # no agentstream.toml or .env picked up
        for argv in COMMANDS.values():  # warm the page cache and .pyc files
            cpu_of(argv, env, cwd)
        for _ in range(args.runs):
            for name, argv in COMMANDS.items():
                samples[name].append(cpu_of(argv, env, cwd))
    base = statistics.median(samples["python -c pass"])
    print(f"CPU seconds per start, median of {args.runs} (user + system):")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"  {name:<30} {median:7.3f} s   x{median / base:6.1f} of python -c pass")
    help_s = statistics.median(samples["agentstream --help"])
    verdict = "within" if help_s < TARGET_S else "OVER"
    print(f"agentstream --help: {help_s:.3f} s CPU, {verdict} the {TARGET_S} s target")


if __name__ == "__main__":
    main()

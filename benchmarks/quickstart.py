"""Wall time of the README's quick-start commands, run as a user runs them.

Each command (``ctsp simulate`` and ``ctsp train`` with their defaults) runs ``--repeats``
times as a fresh process into a new run directory, the two commands taking turns (the machine's
noise falls on both alike); the table gives the median and the range of the wall times, start-up
(imports, numba's cache, the dataset) included, with the machine and the command:

    python benchmarks/quickstart.py --out docs/tables/quickstart.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctsp.runs import machine_line, markdown_table, write_report

COMMANDS = {"ctsp simulate": ["simulate"], "ctsp train": ["train"]}


def wall_time(argv: list[str], out: Path) -> float:
    """Seconds of ``ctsp argv --out out`` in a fresh process (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ctsp", *argv, "--out", str(out), "--no-progress"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the table here (markdown)")
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for name, argv in COMMANDS.items():
                times[name].append(wall_time(argv, Path(tmp) / f"{argv[0]}-{k}"))
                print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    rows = [
        (f"`{name}`", f"{statistics.median(t):.1f}", f"{min(t):.1f}-{max(t):.1f}")
        for name, t in times.items()
    ]
    lines = [
        f"Machine: {machine_line()}",
        "",
        *markdown_table(("command", "median wall time (s)", "range (s)"), rows),
        "",
        f"{args.repeats} runs of each, in turn, each a fresh process with start-up; command: "
        "`python benchmarks/quickstart.py --out docs/tables/quickstart.md`",
    ]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()

"""What a run records about itself when it starts (machine, time, commit, settings), for the bench and for every
scenario, and a scenario's summary file beside its data."""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from server import ROOT

RUN_FILE = "run.json"  # machine, start time, commit and settings, recorded when the run starts
SUMMARY_FILE = "summary.md"  # a scenario's figures (perf/soak.py, perf/overload.py...), as it printed them


def machine() -> str:
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    return (
        f"{os.cpu_count()} cores ({model}), {mem_kib / 2**20:.0f} GiB, {platform.machine()}, "
        f"Python {sys.version.split()[0]}"
    )


def commit() -> str:
    """The commit measured, and "+ uncommitted changes" when the tree differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def record_run(out: Path, settings: dict) -> None:
    """What the report must say about the run, taken when it starts: the machine, time, commit and settings."""
    run = {"machine": machine(), "started": datetime.now().isoformat(timespec="minutes"), "commit": commit()}
    (out / RUN_FILE).write_text(json.dumps(run | {"settings": settings}, indent=2) + "\n")


def run_line(out: Path) -> str:
    try:
        run = json.loads((out / RUN_FILE).read_text())
    except FileNotFoundError:
        return "Machine, date and commit: not recorded with this run."
    return f"Machine: {run['machine']}; run started {run['started']} at commit {run['commit']}."


def start_scenario(out: Path, args: argparse.Namespace) -> None:
    """A scenario's output folder (perf/soak.py, perf/overload.py...), with the run and its command-line settings."""
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()})


def write_summary(out: Path, title: str, lines: list[str], markdown: bool = False) -> Path:
    """out/summary.md: the title, the run's machine, time and commit, then the figure lines the scenario printed,
    as they were printed (in a text block, which keeps their alignment) or, with `markdown`, as markdown."""
    body = lines if markdown else ["```text", *lines, "```"]
    path = out / SUMMARY_FILE
    path.write_text("\n".join([f"# {title}", "", run_line(out), "", *body]) + "\n")
    return path

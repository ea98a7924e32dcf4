"""Run the real perf_analyzer (installed by tritonclient[all]==2.51.0 into the venv's bin/) and read its CSV: the one
place that builds its command line, for the bench (perf/__main__.py) and the reliability scenarios (overload, soak)."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from server import ROOT
from server.backends import BUNDLED_LIBS

BINARY = Path(sys.executable).parent / "perf_analyzer"
LIBS = ROOT / "build" / "perf_analyzer_libs"
# It links libb64.so.0d and libcudart.so.12; nvidia-pytriton bundles both under hashed names.
NEEDED = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}
OUTPUT_SHM_BYTES = 4096  # per output: LABEL is a variable-length string, so give it room
COMMENTS = ["the invoice charged me twice", "support never answered my ticket", "the app is slow to load"]


@dataclass(frozen=True)
class Windows:
    """How perf_analyzer decides a measurement is done: 3 consecutive windows within `stability` percent.

    A window lasts `milliseconds`, or, when `requests` is set, until that many requests completed (so that even the
    slowest system gets more than one request into a short window).
    """

    milliseconds: int
    stability: int
    max_trials: int
    requests: int = 0


def any_3_windows(milliseconds: int) -> Windows:
    """For the scenarios, which want a figure under a given load, not a search for a stable one."""
    return Windows(milliseconds, 1000, 3)


class Failed(RuntimeError):
    def __init__(self, message: str, unstable: bool = False):
        super().__init__(message)
        self.unstable = unstable


def environment() -> dict[str, str]:
    """The process environment with the libraries perf_analyzer links against."""
    LIBS.mkdir(parents=True, exist_ok=True)
    for name, pattern in NEEDED.items():
        link = LIBS / name
        if not link.exists():
            matches = sorted(BUNDLED_LIBS.glob(pattern))
            if not matches:
                raise FileNotFoundError(f"{pattern} not in {BUNDLED_LIBS}: perf_analyzer needs {name}")
            link.unlink(missing_ok=True)
            link.symlink_to(matches[0])
    return dict(os.environ, LD_LIBRARY_PATH=":".join(p for p in (str(LIBS), os.environ.get("LD_LIBRARY_PATH")) if p))


def text_input_data(directory: Path) -> Path:
    """`feedback_text` requests of real comments (random bytes would be refused as not UTF-8)."""
    path = directory / "feedback_text_inputs.json"
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [text], "shape": [1]}} for text in COMMENTS]}))
    return path


def concurrency(clients: int) -> list[str]:
    return [f"--concurrency-range={clients}:{clients}"]


def command(
    model: str,
    url: str,
    protocol: str,
    load: list[str],
    input_data: Path,
    windows: Windows,
    csv_path: Path,
    shapes: dict[str, int] | None = None,
    shm: bool = False,
) -> list[str]:
    """Batch-1 requests of `input_data` under `load`: concurrency(n), or e.g. ["--request-rate-range=2000"]."""
    argv = [str(BINARY), "-m", model, "-u", url, "-i", protocol, "-b", "1", *load, f"--input-data={input_data}"]
    argv += [f"--shape={name}:{length}" for name, length in (shapes or {}).items()]
    argv += [f"-p{windows.milliseconds}", f"-s{windows.stability}", f"-r{windows.max_trials}", "-f", str(csv_path)]
    if windows.requests:
        argv += ["--measurement-mode=count_windows", f"--measurement-request-count={windows.requests}"]
    if shm:
        argv += ["--shared-memory=system", f"--output-shared-memory-size={OUTPUT_SHM_BYTES}"]
    if protocol == "http":
        # JSON both ways: what the v0/v1 web apps speak, so every HTTP system pays the same client cost.
        argv += ["--input-tensor-format=json", "--output-tensor-format=json"]
    return argv


UNSTABLE = "Failed to obtain stable measurement"
LAST_RESORT = 1000  # percent: any 3 windows pass, so a busy machine still gives a figure (marked unstable)


def measure(argv: list[str], log: Path) -> tuple[dict[str, float], bool]:
    """run(), and when the windows never agree, once more with any 3 windows accepted. Returns (row, stable)."""
    try:
        return run(argv, log), True
    except Failed as error:
        if not error.unstable:
            raise
    relaxed = [arg for arg in argv if not arg.startswith(("-s", "-r"))] + [f"-s{LAST_RESORT}", "-r3"]
    return run(relaxed, log), False


def run(argv: list[str], log: Path, check: bool = True) -> dict[str, float]:
    """The CSV row perf_analyzer wrote: throughput (infer/s) and latencies (µs), as numbers. With check=False a failed
    run is no error: its row if it wrote one, else {} (a flood's refusals can stop it)."""
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        finished = subprocess.run(argv, env=environment(), stdout=out, stderr=subprocess.STDOUT)
    if finished.returncode != 0 and check:
        with open(log, errors="replace") as out:
            out.seek(start)
            unstable = UNSTABLE in out.read()
        raise Failed(f"perf_analyzer exited with {finished.returncode} (see {log})", unstable)
    return read_row(Path(argv[argv.index("-f") + 1]))


def read_row(csv_path: Path) -> dict[str, float]:
    """The last row of perf_analyzer's CSV (one per load setting), as numbers; {} when it wrote none."""
    if not csv_path.exists():
        return {}
    with open(csv_path) as report:
        rows = list(csv.DictReader(report))
    return {key: float(value) for key, value in rows[-1].items() if value.strip()} if rows else {}

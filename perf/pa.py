"""perf_analyzer against `feedback_text` for the reliability scenarios (overload, soak); perf/perf_analyzer.py
finds the binary and its libraries."""

import json
import os
from pathlib import Path

from perf.perf_analyzer import BINARY, library_path

COMMENTS = ["the invoice charged me twice", "support never answered my ticket", "the app is slow to load"]


def environment() -> dict[str, str]:
    return dict(os.environ, LD_LIBRARY_PATH=library_path())


def input_data(directory: Path) -> Path:
    """Real comments (random bytes would be refused as not UTF-8)."""
    path = directory / "feedback_text_inputs.json"
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [text], "shape": [1]}} for text in COMMENTS]}))
    return path


def command(url: str, data: Path, csv_path: Path, *load: str, shm: bool = False, window_ms: int = 5000) -> list[str]:
    """One measurement: `load` is e.g. ("--concurrency-range=4",) or ("--request-rate-range=2000",)."""
    argv = [str(BINARY), "-m", "feedback_text", "-u", url, "-i", "grpc", "-b", "1", f"--input-data={data}"]
    argv += [*load, f"-p{window_ms}", "-s1000", "-r3", "-f", str(csv_path)]  # any 3 windows: a figure, not a search
    if shm:
        argv += ["--shared-memory=system", "--output-shared-memory-size=4096"]  # LABEL is a short string
    return argv

"""perf_analyzer (the real binary tritonclient[all]==2.51.0 installs in the venv's bin/) against `feedback_text`."""

import json
import os
import sys
from pathlib import Path

from server.launch import BUNDLED_LIBS, ROOT

BINARY = Path(sys.executable).parent / "perf_analyzer"
LIBS = ROOT / "build" / "perf_analyzer_libs"
# It links libb64.so.0d and libcudart.so.12; nvidia-pytriton bundles both under hashed names.
NEEDED = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}
COMMENTS = ["the invoice charged me twice", "support never answered my ticket", "the app is slow to load"]


def environment() -> dict[str, str]:
    LIBS.mkdir(parents=True, exist_ok=True)
    for name, pattern in NEEDED.items():
        link = LIBS / name
        if not link.exists():
            link.symlink_to(sorted(BUNDLED_LIBS.glob(pattern))[0])
    return dict(os.environ, LD_LIBRARY_PATH=":".join(filter(None, (str(LIBS), os.environ.get("LD_LIBRARY_PATH")))))


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

"""The model repositories a bench run serves: one per profile, and variants of them generated into build/.

Variants are parsed, changed and re-written copies; the committed repository and the exporter's configs stay as they
are.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.members import SHAPES
from python_backend.inprocess import read_config
from server.launch import ROOT

BUILD = ROOT / "build" / "bench"
PROFILES = tuple(SHAPES)  # small: the default members; minilm: a MiniLM-L6-shaped transformer (realistic cost)
MEMBER_PLATFORMS = ("onnxruntime_onnx", "pytorch_libtorch")


def for_profile(profile: str) -> Path:
    """small: the repository `make export` wrote. minilm: exported once into build/ (about 150 s), then reused."""
    if profile == "small":
        repository = ROOT / "model_repository"
        if not (repository / "transformer").exists():
            raise SystemExit("model_repository/ has no exported members: run `make export` first")
        return repository
    repository = ROOT / "build" / f"{profile}_repository"
    if not (repository / "transformer" / "config.pbtxt").exists():
        print(f"exporting the {profile} profile into {repository} (once; delete it to export again)", flush=True)
        command = [sys.executable, "-m", "export", "--profile", profile, "--repository", str(repository)]
        subprocess.run(command, check=True, cwd=ROOT)
    return repository


def variant(
    source: Path, destination: Path, dynamic_batching: bool = True, gpu: bool = False, warmup: bool = True
) -> Path:
    """A copy of `source` where no model batches dynamically, the members run on KIND_GPU instances, or nothing
    warms up at load (quicker starts where only correctness counts)."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))  # model.py links: copied
    for model_dir in sorted(p for p in destination.iterdir() if (p / "config.pbtxt").exists()):
        config = read_config(model_dir)
        if not dynamic_batching:
            config.ClearField("dynamic_batching")
        if not warmup:
            config.ClearField("model_warmup")
        if gpu and config.platform in MEMBER_PLATFORMS:
            for group in config.instance_group:
                group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return destination

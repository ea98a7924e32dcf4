"""The model repositories a bench run serves: one per profile, and variants of them generated into build/.

Variants are parsed, changed and re-written copies; the committed repository and the exporter's configs stay as they
are.
"""

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.members import SHAPES
from python_backend.inprocess import read_config
from server.launch import ROOT

BUILD = ROOT / "build" / "bench"
PROFILES = tuple(SHAPES)  # small: the default members; minilm: a MiniLM-L6-shaped transformer (realistic cost)
MEMBER_PLATFORMS = ("onnxruntime_onnx", "pytorch_libtorch")
THREAD_PARAMETERS = ("intra_op_thread_count", "INTRA_OP_THREAD_COUNT")  # as export/configs.py writes them


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


@dataclass(frozen=True)
class Overrides:
    """Scheduling settings to try in a run's copies before changing them for good in export/configs.py."""

    queue_delay_us: int | None = None  # every model's dynamic_batching max_queue_delay_microseconds
    instances: int | None = None  # the members' instance count
    threads: int | None = None  # the members' intra-op threads per instance


def variant(
    source: Path,
    destination: Path,
    dynamic_batching: bool = True,
    gpu: bool = False,
    warmup: bool = True,
    overrides: Overrides = Overrides(),
) -> Path:
    """A copy of `source` where no model batches dynamically, the members run on KIND_GPU instances, nothing warms
    up at load (quicker starts where only correctness counts), or `overrides` apply."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))  # model.py links: copied
    for model_dir in sorted(p for p in destination.iterdir() if (p / "config.pbtxt").exists()):
        config = read_config(model_dir)
        member = config.platform in MEMBER_PLATFORMS
        if not dynamic_batching:
            config.ClearField("dynamic_batching")
        elif overrides.queue_delay_us is not None and config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = overrides.queue_delay_us
        if not warmup:
            config.ClearField("model_warmup")
        for group in config.instance_group if member else ():
            if gpu:
                group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
            if overrides.instances is not None:
                group.count = overrides.instances
        for key in THREAD_PARAMETERS if member and overrides.threads is not None else ():
            if key in config.parameters:
                config.parameters[key].string_value = str(overrides.threads)
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return destination

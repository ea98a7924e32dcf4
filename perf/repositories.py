"""The model repositories a bench run serves: one per profile, and variants of them generated into build/.

Variants are parsed, changed and re-written copies; the committed repository and the exporter's configs stay as they
are.
"""

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from export.members import DEFAULT_PROFILE
from export.members import PROFILES as EXPORT_PROFILES
from infra.gpu_overlay import GPU_PLATFORMS, to_gpu
from python_backend.layout import read_config
from server import ROOT

BUILD = ROOT / "build" / "bench"
PROFILES = tuple(EXPORT_PROFILES)  # accurate: the default members (the committed repository); fast: the small ones
THREAD_PARAMETERS = ("intra_op_thread_count", "INTRA_OP_THREAD_COUNT")  # as export/configs.py writes them


def for_profile(profile: str) -> Path:
    """The default profile: the repository `make export` wrote. Another: exported into build/ (about a minute), then
    reused until its profile or the exporter's code (export/*.py) changes."""
    if profile == DEFAULT_PROFILE:
        repository = ROOT / "model_repository"
        if not (repository / "transformer").exists():
            raise SystemExit("model_repository/ has no exported members: run `make export` first")
        return repository
    repository = ROOT / "build" / f"{profile}_repository"
    stamp = repository / "exported-with.txt"
    exporter = hashlib.sha1(b"".join(path.read_bytes() for path in sorted((ROOT / "export").glob("*.py"))))
    exported_with = f"{EXPORT_PROFILES[profile]!r}\n{exporter.hexdigest()}"
    if not stamp.exists() or stamp.read_text() != exported_with:
        print(f"exporting the {profile} profile into {repository} (once per profile and exporter)", flush=True)
        command = [sys.executable, "-m", "export", "--profile", profile, "--repository", str(repository)]
        subprocess.run(command, check=True, cwd=ROOT)
        stamp.write_text(exported_with)
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
    """A copy of `source` where no model batches dynamically, the members run on the GPU as infra/gpu_overlay.py
    sets them up, nothing warms up at load (quicker starts where only correctness counts), or `overrides` apply."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))  # model.py links: copied
    for model_dir in sorted(p for p in destination.iterdir() if (p / "config.pbtxt").exists()):
        config = read_config(model_dir)
        member = config.platform in GPU_PLATFORMS  # onnxruntime and libtorch
        if not dynamic_batching:
            config.ClearField("dynamic_batching")
        elif overrides.queue_delay_us is not None and config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = overrides.queue_delay_us
        if not warmup:
            config.ClearField("model_warmup")
        if member and gpu:
            to_gpu(config)  # what infra/gpu_overlay.py writes for NVIDIA's container
        for group in config.instance_group if member and overrides.instances is not None else ():
            group.count = overrides.instances
        for key in THREAD_PARAMETERS if member and overrides.threads is not None else ():
            if key in config.parameters:
                config.parameters[key].string_value = str(overrides.threads)
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return destination

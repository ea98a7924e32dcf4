"""Model folders to deploy in tests and in perf/model_swap.py: a good new version with visibly different answers,
and the broken kinds deploy must refuse. Each is built from the exported members, in seconds, with no training."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf import text_format
from onnx import numpy_helper

from export.artifacts import export_onnx
from export.configs import MemberSpec, member_config
from export.features import expose_features
from export.members import MAX_POSITIONS, SMALL_TRANSFORMER, RaggedInputs, TransformerClassifier
from python_backend.inprocess import RAGGED_INPUTS
from python_backend.layout import latest_version, read_config
from release.gates import served_class_names
from release.parity import parity_samples

# Adding this to one class's logit moves every probability by up to about 10%, yet leaves the argmax (and so the
# held-out accuracy) nearly unchanged: a new version whose answers are told apart from the old one's in every row.
LOGIT_SHIFT = 0.25


def copy_latest(repo: Path, model: str, destination: Path) -> Path:
    """destination/<model>/{config.pbtxt, 1/}: a model folder as the exporter writes one."""
    folder = destination / model
    shutil.copytree(latest_version(repo / model), folder / "1", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "1" / "config.pbtxt").unlink(missing_ok=True)
    shutil.copy(repo / model / "config.pbtxt", folder / "config.pbtxt")
    return folder


def shifted(repo: Path, model: str, destination: Path, shift: float = LOGIT_SHIFT) -> Path:
    """The live member with its output bias for class 0 moved by `shift` (ONNX or TorchScript)."""
    folder = copy_latest(repo, model, destination)
    onnx_file, torchscript_file = folder / "1" / "model.onnx", folder / "1" / "model.pt"
    if onnx_file.exists():
        graph = onnx.load(str(onnx_file))
        (bias,) = [t for t in graph.graph.initializer if list(t.dims) == [len(served_class_names(repo))]]
        values = numpy_helper.to_array(bias).copy()
        values[0] += shift
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        onnx.save(graph, str(onnx_file))
    else:
        module = torch.jit.load(str(torchscript_file))
        with torch.no_grad():
            module.head.bias[0] += shift
        module.save(str(torchscript_file))
    return folder


def corrupt_onnx(repo: Path, destination: Path) -> Path:
    folder = copy_latest(repo, "transformer", destination)
    (folder / "1" / "model.onnx").write_bytes(b"\x08\x07 this is not an ONNX protobuf")
    return folder


def without_warmup(repo: Path, destination: Path) -> Path:
    folder = copy_latest(repo, "transformer", destination)
    config = read_config(folder)
    config.ClearField("model_warmup")
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def five_classes(repo: Path, destination: Path, config_says: int) -> Path:
    """An (untrained) transformer with 5 classes; its config declares `config_says` classes."""
    vocab = read_config(repo / "transformer").parameters["vocab_size"].string_value
    torch.manual_seed(0)
    model = TransformerClassifier(torch.randn(int(vocab), 16), 5, SMALL_TRANSFORMER).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, int(vocab), size=(64, 16), dtype=np.int64)
    folder = destination / "transformer"
    (folder / "1").mkdir(parents=True)
    guarded = RaggedInputs(model, int(vocab), MAX_POSITIONS)
    export_onnx(guarded, folder / "1" / "model.onnx", parity_samples(ids, np.ones_like(ids)))
    features = expose_features(folder / "1" / "model.onnx")
    spec = MemberSpec(
        "transformer",
        "onnxruntime_onnx",
        RAGGED_INPUTS,
        ("PROBS", "INPUT_ERRORS"),
        tuple(served_class_names(repo)[:config_says]),
        int(vocab),
        MAX_POSITIONS,
        features=features,
    )
    (folder / "config.pbtxt").write_text(member_config(spec))
    return folder


def relabelled(repo: Path, destination: Path) -> Path:
    """The live transformer, its config claiming the served classes in another order: same shapes, other meaning."""
    folder = copy_latest(repo, "transformer", destination)
    config = read_config(folder)
    names = config.parameters["class_names"].string_value.split(",")
    config.parameters["class_names"].string_value = ",".join(names[1:] + names[:1])
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def fuse_with(repo: Path, destination: Path, parameter: str, value: str) -> Path:
    """The live fuse step with one config parameter changed: `combiner` (another way to combine, as good), or
    `class_names` (the classes in another order: every row loads and sums to 1, and answers the wrong label)."""
    folder = copy_latest(repo, "fuse", destination)
    config = read_config(folder)
    config.parameters[parameter].string_value = value
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def fuse_that_raises(repo: Path, destination: Path) -> Path:
    folder = copy_latest(repo, "fuse", destination)
    (folder / "1" / "model.py").unlink()
    (folder / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('this fuse candidate refuses to start')\n"
    )
    return folder

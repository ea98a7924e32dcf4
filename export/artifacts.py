"""Export a member to ONNX or TorchScript and check it against the eager model before it goes anywhere."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from python_backend.inprocess import run_file
from release.parity import check_parity

OPSET = 17


def eager(model: nn.Module):
    """The eager model as a numpy function, the reference an export is checked against."""

    def run(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [output.numpy() for output in model(torch.from_numpy(ids), torch.from_numpy(mask))]

    return run


def export_onnx(
    model: nn.Module,
    path: Path,
    samples,
    input_names=("INPUT_IDS", "ATTENTION_MASK"),
    output_names=("PROBS", "INPUT_ERRORS"),
) -> float:
    """ONNX with readable tensor names and dynamic batch and sequence axes."""
    ids, mask = samples[0]
    # Each input its own sequence axis: a mask of another length than the ids is a client's error that the graph
    # flags (CheckedInputs), and one shared axis name would make onnxruntime fail on it instead.
    axes = {name: {0: "batch", 1: f"sequence_{index}"} for index, name in enumerate(input_names)}
    axes |= {name: {0: "batch"} for name in output_names}
    torch.onnx.export(
        model,
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        str(path),
        dynamo=False,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=axes,
        opset_version=OPSET,
    )
    exported = run_file("onnxruntime_onnx", path, tuple(input_names), tuple(output_names))
    return check_parity(path.parent.parent.name, eager(model), exported, samples)


def export_torchscript(model: nn.Module, path: Path, samples) -> float:
    ids, mask = samples[0]
    with torch.inference_mode():
        traced = torch.jit.trace(model, (torch.from_numpy(ids), torch.from_numpy(mask)))
    traced.save(str(path))
    return check_parity(path.parent.parent.name, eager(model), run_file("pytorch_libtorch", path), samples)

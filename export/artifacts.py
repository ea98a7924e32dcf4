"""Export a member to ONNX or TorchScript and check it against the eager model before it goes anywhere."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.quantize import quantize_int8
from python_backend.inprocess import RAGGED_INPUTS, ragged, run_file
from release.parity import check_parity, row_by_row

OPSET = 17


def as_tensors(ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, ...]:
    """A request's ids and mask as the member graph takes them (export.members.RaggedInputs)."""
    return tuple(torch.from_numpy(array) for array in ragged(ids, mask))


def eager(model: nn.Module):
    """The eager model as a numpy function, the reference an export is checked against."""

    def run(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [output.numpy() for output in model(*as_tensors(ids, mask))]

    return run


def export_onnx(
    model: nn.Module,
    path: Path,
    samples,
    input_names=RAGGED_INPUTS,
    output_names=("PROBS", "INPUT_ERRORS"),
) -> float:
    """ONNX with readable tensor names and dynamic axes."""
    ids, mask = samples[0]
    # Each input its own axes: a mask of another length than the ids is a client's error that the graph flags
    # (RaggedInputs), and one shared axis name would make onnxruntime fail on it instead.
    axes = {name: {0: f"{name.lower()}_elements"} for name in input_names[:2]}
    axes |= {name: {0: "rows"} for name in (*input_names[2:], *output_names)}
    torch.onnx.export(
        model,
        as_tensors(ids, mask),
        str(path),
        dynamo=False,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=axes,
        opset_version=OPSET,
    )
    exported = run_file("onnxruntime_onnx", path, tuple(input_names), tuple(output_names))
    return check_parity(path.parent.parent.name, eager(model), exported, samples)


def export_onnx_int8(model: nn.Module, path: Path, samples, calibration: tuple[np.ndarray, np.ndarray]) -> float:
    """export_onnx, then int8 weights (export/quantize.py): the float graph is held to the eager model, and the int8
    file to itself row by row (its probabilities move by up to ~0.2 from the float ones; the accuracy export reports
    is the int8 file's, as served)."""
    float_path = path.with_name("model.float.onnx")
    try:
        export_onnx(model, float_path, samples)
        quantize_int8(float_path, path, *calibration)
    finally:
        float_path.unlink(missing_ok=True)
    run = run_file("onnxruntime_onnx", path, output_names=("PROBS",))
    return check_parity(f"{path.parent.parent.name} int8, batched against row by row", row_by_row(run), run, samples)


def export_torchscript(model: nn.Module, path: Path, samples) -> float:
    ids, mask = samples[0]
    with torch.inference_mode():
        traced = torch.jit.trace(model, as_tensors(ids, mask))
    traced.save(str(path))
    return check_parity(path.parent.parent.name, eager(model), run_file("pytorch_libtorch", path), samples)

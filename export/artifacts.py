"""Export a member to ONNX or TorchScript and check it against the eager model before it goes anywhere."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from python_backend.inprocess import run_file

PARITY_TOLERANCE = 1e-4
OPSET = 17


class ParityError(RuntimeError):
    pass


def eager(model: nn.Module):
    """The eager model as a numpy function, the reference an export is checked against."""

    def run(ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return [output.numpy() for output in model(torch.from_numpy(ids), torch.from_numpy(mask))]

    return run


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, list | tuple) else [result]


def check_parity(name: str, reference, run_exported, samples: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Max abs difference between exported and reference outputs over every sample; raises above the tolerance.

    `reference` and `run_exported` map (ids, mask) numpy arrays to a numpy output or a list of them (every output is
    compared): at export the reference is the eager model, at deploy (export/deploy.py) the same artifact run one
    unpadded row at a time.
    """
    worst = 0.0
    for ids, mask in samples:
        pairs = zip(as_list(run_exported(ids, mask)), as_list(reference(ids, mask)), strict=True)
        worst = max(worst, *(float(np.abs(exported - expected).max()) for exported, expected in pairs))
    print(f"  parity {name}: max abs diff {worst:.2e} over {len(samples)} input shapes (limit {PARITY_TOLERANCE:.0e})")
    if not worst <= PARITY_TOLERANCE:  # also catches NaN
        raise ParityError(f"{name}: exported output differs from eager by {worst:.3e} > {PARITY_TOLERANCE}")
    return worst


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


def parity_samples(ids: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real rows at several batch sizes and sequence lengths, so dynamic axes are exercised, not just traced, and
    rows a client got wrong (ids outside the vocabulary, a mask that is not 0/1), which the graph must repair alike."""
    longest = int(mask.sum(1).max())  # cutting the padding here keeps every real token
    bad_ids, bad_mask = ids[:4].copy(), mask[:4].copy()
    bad_ids[0, 0], bad_ids[1, 1], bad_mask[2, 0] = -1, 10**9, 2
    return [
        (bad_ids, bad_mask),
        (ids[:8], mask[:8]),
        (ids[8:9], mask[8:9]),
        (ids[:33, :longest], mask[:33, :longest]),
        (ids[:64], mask[:64]),
    ]

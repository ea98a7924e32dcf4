"""Static int8 quantization of an ONNX member's weight matrices, with activation scales calibrated on training rows.

Static, not dynamic: onnxruntime's dynamic quantization scales each activation tensor by its own range at run time,
and a ragged batch is one tensor, so a comment's answer would depend on the comments batched with it (measured: up
to 0.096 on a probability). Calibrated scales are fixed in the file, so a row gives the same answer alone and
batched. Only the Gemm nodes (the projections and feed-forward layers, nearly all of the work) are quantized;
attention's own products stay in float, and so does the classifier head (the last Gemm: tiny, and the one that
writes the probabilities).
"""

import logging
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from python_backend.inprocess import RAGGED_INPUTS, ragged

CALIBRATION_ROWS = 512
CALIBRATION_BATCH = 32


class Batches(CalibrationDataReader):
    """The member's graph inputs for consecutive batches of rows, each cut to its longest row."""

    def __init__(self, ids: np.ndarray, mask: np.ndarray):
        feeds = []
        for start in range(0, len(ids), CALIBRATION_BATCH):
            rows = slice(start, start + CALIBRATION_BATCH)
            longest = int(mask[rows].sum(1).max())
            feeds.append(dict(zip(RAGGED_INPUTS, ragged(ids[rows, :longest], mask[rows, :longest]), strict=True)))
        self.feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def quantize_int8(float_model: Path, int8_model: Path, ids: np.ndarray, mask: np.ndarray) -> None:
    """Write `int8_model`: `float_model` with int8 weights (per output channel) and uint8 activations (onnxruntime's
    fast path on AVX2), calibrated on the first CALIBRATION_ROWS rows of `ids` / `mask`."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs its shape-inference notes as warnings on the root logger
    try:
        _quantize(float_model, int8_model, ids, mask)
    finally:
        root.setLevel(level)


def _quantize(float_model: Path, int8_model: Path, ids: np.ndarray, mask: np.ndarray) -> None:
    gemms = [node.name for node in onnx.load(str(float_model)).graph.node if node.op_type == "Gemm"]
    quantize_static(
        str(float_model),
        str(int8_model),
        Batches(ids[:CALIBRATION_ROWS], mask[:CALIBRATION_ROWS]),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Gemm"],
        nodes_to_exclude=[gemms[-1]],
    )

"""The transformer's sentence features as a graph output, EMBEDDING: what per-tenant heads read.

A tenant's model is a linear head over the features the shared encoder already computes (python_backend/heads.py),
so the graph only has to hand them out: the input of its own classifier head, [rows, width].
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

FEATURES = "EMBEDDING"
# The classifier head's Linear, by its weight's name: `head` in export/members.py and export/minilm.py,
# `classifier` in a Hugging Face checkpoint's *ForSequenceClassification (export/pretrained.py).
HEAD_WEIGHTS = ("head.weight", "classifier.weight")


def expose_features(path: Path) -> int:
    """Adds EMBEDDING, the input of the member's classifier head, as an output of the ONNX graph at `path`; returns
    its width. PROBS is computed as before."""
    model = onnx.load(str(path))
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer if tensor.name.endswith(HEAD_WEIGHTS)}
    heads = [node for node in graph.node if node.op_type == "Gemm" and node.input[1] in weights]
    if not heads:
        raise ValueError(f"{path}: no classifier head (a Gemm on *{' or *'.join(HEAD_WEIGHTS)}) whose input to expose")
    head, weight = heads[-1], weights[heads[-1].input[1]]
    width = int(weight.dims[1])  # Linear's weight is [classes, width]
    graph.node.append(helper.make_node("Identity", [head.input[0]], [FEATURES], name="features"))
    graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["rows", width]))
    onnx.save(model, str(path))
    return width

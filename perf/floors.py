"""Triton's own cost per request on this machine: two trivial models served alone, measured in the same run as the
ensembles. `floor_native` is an ONNX graph (ReduceSum) in the native onnxruntime backend; `floor_python` does the
same in a Python-backend stub. Both take `feedback`'s inputs and batch like the members."""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from export.configs import MAX_BATCH_SIZE, PREFERRED_BATCH_SIZES, dynamic_batching, tensor_line
from python_backend.layout import parse_config
from server.launch import ROOT

INPUTS = ("INPUT_IDS", "ATTENTION_MASK")


def config(name: str, backend: str) -> str:
    text = f"""name: "{name}"
{backend}
max_batch_size: {MAX_BATCH_SIZE}
input [
{tensor_line(INPUTS[0], "TYPE_INT64", "-1")},
{tensor_line(INPUTS[1], "TYPE_INT64", "-1")}
]
output [
{tensor_line("TOKENS", "TYPE_INT64", "1")}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{dynamic_batching(PREFERRED_BATCH_SIZES)}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
"""
    parse_config(text)
    return text


def reduce_sum_onnx() -> onnx.ModelProto:
    """TOKENS [b,1] = sum of ATTENTION_MASK [b,seq] over the sequence; INPUT_IDS is taken and not used."""
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("axes", TensorProto.INT64, [1], [1])),
            helper.make_node("ReduceSum", ["ATTENTION_MASK", "axes"], ["TOKENS"], keepdims=1),
        ],
        "floor",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in INPUTS],
        [helper.make_tensor_value_info("TOKENS", TensorProto.INT64, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def write(repository: Path) -> Path:
    """A repository with the two floor models (the Python one linked to python_backend/, like every model.py)."""
    (repository / "floor_native" / "1").mkdir(parents=True)
    onnx.save(reduce_sum_onnx(), repository / "floor_native" / "1" / "model.onnx")
    (repository / "floor_native" / "config.pbtxt").write_text(config("floor_native", 'platform: "onnxruntime_onnx"'))
    (repository / "floor_python" / "1").mkdir(parents=True)
    (repository / "floor_python" / "1" / "model.py").symlink_to(ROOT / "python_backend/models/floor/model.py")
    (repository / "floor_python" / "config.pbtxt").write_text(config("floor_python", 'backend: "python"'))
    return repository

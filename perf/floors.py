"""Triton's own cost per request on this machine, measured in the same run as the ensembles.

Two trivial models served alone: `floor_native` is an ONNX graph (ReduceSum) in the native onnxruntime backend;
`floor_python` does the same in a Python-backend stub. Both take `feedback`'s inputs and batch like the members.
Two ensembles of them have the shapes of the served graphs with nothing to compute: `floor_ensemble` is `feedback`'s
(two native members side by side, then a Python step that takes both outputs), `floor_ensemble_text` is
`feedback_text`'s (one more Python step in front). What they cost is the least any members could cost in that graph.
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from export.configs import MAX_BATCH_SIZE, PREFERRED_BATCH_SIZES, dynamic_batching, tensor_line
from python_backend.layout import parse_config
from server import ROOT

INPUTS = ("INPUT_IDS", "ATTENTION_MASK")


def interface(name: str, backend: str) -> str:
    """What every floor model takes and gives: `feedback`'s inputs, TOKENS [b, 1] out."""
    return f"""name: "{name}"
{backend}
max_batch_size: {MAX_BATCH_SIZE}
input [
{tensor_line(INPUTS[0], "TYPE_INT64", "-1")},
{tensor_line(INPUTS[1], "TYPE_INT64", "-1")}
]
output [
{tensor_line("TOKENS", "TYPE_INT64", "1")}
]
"""


def config(name: str, backend: str) -> str:
    text = (
        interface(name, backend)
        + f"""instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{dynamic_batching(PREFERRED_BATCH_SIZES)}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "1" }} }}
"""
    )
    parse_config(text)
    return text


def ensemble_config(name: str, python_front: bool) -> str:
    """`feedback`'s graph (or, with python_front, `feedback_text`'s) with the floor models as its steps."""
    ids, mask = ("front", "front") if python_front else INPUTS
    steps = [("floor_native", ids, mask, "native_a"), ("floor_native_b", ids, mask, "native_b")]
    steps.append(("floor_python", "native_a", "native_b", "TOKENS"))  # the fuse step's place: after both members
    if python_front:  # the tokenizer's place
        steps.insert(0, ("floor_python_b", *INPUTS, "front"))
    text = (
        interface(name, 'platform: "ensemble"')
        + """ensemble_scheduling {
  step [
"""
    )
    text += ",\n".join(
        f"""    {{
      model_name: "{model}"
      model_version: -1
      input_map {{ key: "{INPUTS[0]}" value: "{first}" }}
      input_map {{ key: "{INPUTS[1]}" value: "{second}" }}
      output_map {{ key: "TOKENS" value: "{output}" }}
    }}"""
        for model, first, second, output in steps
    )
    text += "\n  ]\n}\n"
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
    """A repository with the floor models (the Python ones linked to python_backend/, like every model.py) and the
    two floor ensembles; `_b` models are second instances of a kind, as the served graphs have two members."""
    for name in ("floor_native", "floor_native_b"):
        (repository / name / "1").mkdir(parents=True)
        onnx.save(reduce_sum_onnx(), repository / name / "1" / "model.onnx")
        (repository / name / "config.pbtxt").write_text(config(name, 'platform: "onnxruntime_onnx"'))
    for name in ("floor_python", "floor_python_b"):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "model.py").symlink_to(ROOT / "python_backend/models/floor_python/model.py")
        (repository / name / "config.pbtxt").write_text(config(name, 'backend: "python"'))
    for name, python_front in (("floor_ensemble", False), ("floor_ensemble_text", True)):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(ensemble_config(name, python_front))
    return repository

"""config.pbtxt for the members, written by the exporter beside each artifact.

The same file serves the embedded CPU server (Python-based onnxruntime/pytorch backends) and the NGC container
(native backends): only standard fields plus `parameters`, which the native backends ignore or understand.
"""

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

MAX_BATCH_SIZE = 64
PREFERRED_BATCH_SIZES = (8, 16, 32)
MAX_QUEUE_DELAY_US = 0  # lowest c=1 latency, c=16 throughput unchanged (README "What to tune")
# Bounded queues: under overload a member refuses at once ("Exceeds maximum queue size", UNAVAILABLE) what it could
# not start within the timeout, instead of queueing without bound. The committed fuse and tokenizer configs say the
# same (a test checks every member of the repository).
MAX_QUEUE_SIZE = 256
QUEUE_TIMEOUT_US = 2_000_000


@dataclass(frozen=True)
class MemberSpec:
    name: str
    platform: str  # "onnxruntime_onnx" | "pytorch_libtorch"
    inputs: tuple[str, str]  # (token ids, attention mask)
    output: str
    num_classes: int
    vocab_size: int
    max_seq_len: int
    warmup_seq: int  # the length the tokenizer pads to: what real traffic will look like
    instances: int = 1
    threads: int = 1


def _tensor(name: str, data_type: str, dims: str) -> str:
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {dims} ] }}'


def _parameter(key: str, value) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def dynamic_batching(preferred: tuple[int, ...] = ()) -> str:
    preferred_line = f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else ""
    return f"""dynamic_batching {{
{preferred_line}  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}
  default_queue_policy {{
    max_queue_size: {MAX_QUEUE_SIZE}
    default_timeout_microseconds: {QUEUE_TIMEOUT_US}
    timeout_action: REJECT
  }}
}}"""


def member_config(spec: MemberSpec) -> str:
    ids, mask = spec.inputs
    # Each backend reads its own thread-count key; both are standard names of the native backends.
    threads = "intra_op_thread_count" if spec.platform == "onnxruntime_onnx" else "INTRA_OP_THREAD_COUNT"
    warmup_inputs = "\n".join(
        f'    inputs {{ key: "{name}" value: {{ data_type: TYPE_INT64 dims: [ {spec.warmup_seq} ] zero_data: true }} }}'
        for name in spec.inputs
    )
    text = f"""name: "{spec.name}"
platform: "{spec.platform}"
max_batch_size: {MAX_BATCH_SIZE}
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [
{_tensor(ids, "TYPE_INT64", "-1")},
{_tensor(mask, "TYPE_INT64", "-1")}
]
output [
{_tensor(spec.output, "TYPE_FP32", str(spec.num_classes))}
]
instance_group [ {{ count: {spec.instances} kind: KIND_CPU }} ]
{dynamic_batching(PREFERRED_BATCH_SIZES)}
{_parameter("vocab_size", spec.vocab_size)}
{_parameter("max_seq_len", spec.max_seq_len)}
{_parameter(threads, spec.threads)}
model_warmup [
  {{
    name: "batch_{PREFERRED_BATCH_SIZES[-1]}"
    batch_size: {PREFERRED_BATCH_SIZES[-1]}
{warmup_inputs}
  }}
]
"""
    parse(text)  # never write a config Triton would refuse
    return text


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def check_tokens_config(vocab_size: int, max_seq_len: int) -> str:
    """The `feedback` ensemble's first step validates what clients send against the members' limits."""
    text = f"""# Written by export/: the limits come from the trained tokenizer and members.
name: "check_tokens"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
{_tensor("INPUT_IDS", "TYPE_INT64", "-1")},
{_tensor("ATTENTION_MASK", "TYPE_INT64", "-1")}
]
output [
{_tensor("CHECKED_INPUT_IDS", "TYPE_INT64", "-1")},
{_tensor("CHECKED_ATTENTION_MASK", "TYPE_INT64", "-1")}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{dynamic_batching()}
{_parameter("vocab_size", vocab_size)}
{_parameter("max_seq_len", max_seq_len)}
"""
    parse(text)
    return text

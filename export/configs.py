"""config.pbtxt for the members, written by the exporter beside each artifact.

The same file serves the embedded CPU server and the NGC container, both with Triton's native onnxruntime and pytorch
backends: only standard fields plus `parameters`, which the native backends ignore or understand.
"""

from dataclasses import dataclass

from export.features import FEATURES
from python_backend.layout import parse_config

MAX_BATCH_SIZE = 64  # comments per request, what the ensembles and the tokenizer take
# Rows per member call: a long comment is read as several windows (python_backend/text.py), so a request of 64
# comments can make more rows than that; the tokenizer refuses a request that would make more than MAX_ROWS.
MAX_ROWS = 256
PREFERRED_BATCH_SIZES = (8, 16, 32)
# What the members warm up on at load: the shapes of real traffic, a batch of short comments and one of windows.
WARMUP_SHAPES = ((16, 24), (4, 256))
HEAD_MEMORY_MB = 64  # tenant heads the fuse step holds: 18 KB for 12 classes, so 3,500 of the largest
METRIC_TENANTS = 50  # tenants with Prometheus series of their own
MAX_QUEUE_DELAY_US = 0  # lowest c=1 latency; a profile may give its members a delay (export.members.Profile)
# A bounded queue (max_queue_size, a timeout, REJECT) refuses the excess at once under overload, but tritonserver 2.51
# then turns off the batcher's prefetching, and its wait for a free instance can miss its wake-up and sleep 500 ms
# (core dynamic_batch_scheduler.cc, WaitForPayloadSlotAvailable): measured here, `feedback` at 8 concurrent clients
# served 531 requests/s with p99 506 ms with the bound on every model, 1,639 with p99 9 ms without. So no generated
# config has one; `dynamic_batching(bounded=True)` writes it for a deployment that prefers refusals to queueing,
# on an ensemble's first step only: 2.51 never answers a request that a later step refuses (docs/pitfalls.md).
MAX_QUEUE_SIZE = 256
QUEUE_TIMEOUT_US = 2_000_000
QUEUE_POLICY = f"""  default_queue_policy {{
    max_queue_size: {MAX_QUEUE_SIZE}
    default_timeout_microseconds: {QUEUE_TIMEOUT_US}
    timeout_action: REJECT
  }}
"""


@dataclass(frozen=True)
class MemberSpec:
    name: str
    platform: str  # "onnxruntime_onnx" | "pytorch_libtorch"
    inputs: tuple[str, str, str, str]  # token ids, attention mask, and each row's length in each (batch inputs)
    outputs: tuple[str, str]  # (class probabilities, INPUT_ERRORS: export.members.RaggedInputs)
    class_names: tuple[str, ...]  # in the order of the probabilities' columns
    vocab_size: int
    max_seq_len: int
    instances: int = 1
    threads: int = 1
    queue_delay_us: int = MAX_QUEUE_DELAY_US
    features: int = 0  # width of the EMBEDDING output (export/features.py); 0: the graph has none


def tensor_line(name: str, data_type: str, dims: str, extra: str = "") -> str:
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {dims} ] {extra + " " if extra else ""}}}'


def _parameter(key: str, value) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def dynamic_batching(preferred: tuple[int, ...] = (), bounded: bool = False, delay_us: int = MAX_QUEUE_DELAY_US) -> str:
    preferred_line = f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n" if preferred else ""
    return f"""dynamic_batching {{
{preferred_line}  max_queue_delay_microseconds: {delay_us}
{QUEUE_POLICY if bounded else ""}}}"""


def member_config(spec: MemberSpec) -> str:
    ids, mask, ids_lengths, mask_lengths = spec.inputs
    probs, errors = spec.outputs
    # Each backend reads its own thread-count keys. Library defaults (a thread per core in each pool) cost 50-95% more
    # CPU per request on 2 cores (docs/architecture.md), so the pools are set. Not libtorch's inter-op
    # pool: it can be sized once per process, and the r24.10 pytorch backend sizes it at every load, so reloading a
    # model with INTER_OP_THREAD_COUNT aborts tritonserver (pytorch_backend#158). TorchScript without fork() never
    # starts that pool anyway.
    if spec.platform == "onnxruntime_onnx":
        threads = _parameter("intra_op_thread_count", spec.threads) + "\n" + _parameter("inter_op_thread_count", 1)
    else:
        threads = _parameter("INTRA_OP_THREAD_COUNT", spec.threads)
    # Warm-up ids are 0 and the mask random bytes, which the graph reads as 1 wherever they are not 0: every token
    # is computed, as real comments' are (Triton's warm-up data is zeros, random bytes or a file).
    warmups = ",\n".join(
        f"""  {{
    name: "{rows}x{length}"
    batch_size: {rows}
    inputs {{ key: "{ids}" value: {{ data_type: TYPE_INT64 dims: [ {length} ] zero_data: true }} }}
    inputs {{ key: "{mask}" value: {{ data_type: TYPE_INT64 dims: [ {length} ] random_data: true }} }}
  }}"""
        for rows, length in WARMUP_SHAPES
    )
    features = f",\n{tensor_line(FEATURES, 'TYPE_FP32', str(spec.features))}" if spec.features else ""
    text = f"""name: "{spec.name}"
platform: "{spec.platform}"
max_batch_size: {MAX_ROWS}
version_policy: {{ latest: {{ num_versions: 1 }} }}
# Ragged batching: requests of any length batch together, end to end; the graph reads each row's length from the
# batch inputs and computes on real tokens only (export.members.RaggedInputs).
input [
{tensor_line(ids, "TYPE_INT64", "-1", "allow_ragged_batch: true")},
{tensor_line(mask, "TYPE_INT64", "-1", "allow_ragged_batch: true")}
]
batch_input [
  {{ kind: BATCH_ITEM_SHAPE target_name: "{ids_lengths}" data_type: TYPE_INT32 source_input: "{ids}" }},
  {{ kind: BATCH_ITEM_SHAPE target_name: "{mask_lengths}" data_type: TYPE_INT32 source_input: "{mask}" }}
]
output [
{tensor_line(probs, "TYPE_FP32", str(len(spec.class_names)))},
{tensor_line(errors, "TYPE_INT32", "1")}{features}
]
instance_group [ {{ count: {spec.instances} kind: KIND_CPU }} ]
{dynamic_batching(PREFERRED_BATCH_SIZES, delay_us=spec.queue_delay_us)}
# The limits that the graph enforces (export.members.RaggedInputs); read by infra/gpu_overlay.py and by tests.
{_parameter("vocab_size", spec.vocab_size)}
# What each PROBS column means: a deploy refuses a member whose label set is not the fuse step's.
{_parameter("class_names", ",".join(spec.class_names))}
{_parameter("max_seq_len", spec.max_seq_len)}
{threads}
model_warmup [
{warmups}
]
"""
    parse_config(text)  # never write a config Triton would refuse
    return text


def fuse_config(members: list[str], class_names: list[str], vocab_size: int, max_seq_len: int) -> str:
    """The last step of the ensembles; it reads the members' input limits to word the errors of bad requests. The
    embedding's width is left open (-1): a transformer of another width still serves, and a tenant head refuses
    features of a width it was not trained on."""
    probs = ",\n".join(tensor_line(f"{member}_probs", "TYPE_FP32", str(len(class_names))) for member in members)
    text = f"""# Written by export/. Combines one `<member>_probs` input per member; `input_errors` (a member's
# INPUT_ERRORS) turns a request whose token ids the members had to repair into an error for that request alone;
# `windows` (the tokenizer's WINDOWS; absent for token ids in) says which rows are windows of one comment, averaged
# into one answer. combiner: "weighted_mean" (weights "member=w,...", missing members weigh 1) or "stacking"
# (1/stacking.npz, fitted by export/ on a validation split). In `feedback_tenant`, `embedding` (the transformer's
# EMBEDDING) and `tenant` (the tokenizer's ROW_TENANTS) give each comment its tenant head's answer as well
# (TENANT_*: python_backend/heads.py, heads read from head__<tenant>.npz at the repository's root).
name: "fuse"
backend: "python"
max_batch_size: {MAX_ROWS}
input [
{probs},
{tensor_line("input_errors", "TYPE_INT32", "1")},
{tensor_line("windows", "TYPE_INT32", "1", "optional: true")},
{tensor_line("embedding", "TYPE_FP32", "-1", "optional: true")},
{tensor_line("tenant", "TYPE_STRING", "1", "optional: true")}
]
output [
{tensor_line("PROBS", "TYPE_FP32", str(len(class_names)))},
{tensor_line("LABEL", "TYPE_STRING", "1")},
{tensor_line("MEMBER_PROBS", "TYPE_FP32", f"{len(members)}, {len(class_names)}")},
{tensor_line("WINDOWS", "TYPE_INT32", "1")},
{tensor_line("TENANT_PROBS", "TYPE_FP32", "-1")},
{tensor_line("TENANT_LABEL", "TYPE_STRING", "1")},
{tensor_line("TENANT_CLASSES", "TYPE_STRING", "-1")}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
{dynamic_batching()}
{_parameter("class_names", ",".join(class_names))}
{_parameter("combiner", "weighted_mean")}
{_parameter("weights", ",".join(f"{member}=1" for member in members))}
{_parameter("vocab_size", vocab_size)}
{_parameter("max_seq_len", max_seq_len)}
# Tenant heads held in memory; beyond it the least recently used are dropped and read again when asked for.
{_parameter("head_memory_mb", HEAD_MEMORY_MB)}
# Tenants with Prometheus series of their own (the first ones answered); later ones count as "other".
{_parameter("metric_tenants", METRIC_TENANTS)}
"""
    parse_config(text)
    return text

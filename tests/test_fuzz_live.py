"""Live fuzzing over gRPC and HTTP with every model's real input names, each answer held to the in-process truth.

FUZZ_REQUESTS sets how many, split between the protocols (default 300, a few seconds; `make fuzz`: 6,000). A request
is valid, near-valid (the model's own input names and dtypes with a wrong shape or value: ids outside the
vocabulary, a mask of 2 or of another length, 513 tokens, an empty batch, text that is not UTF-8, a malformed or
second TENANT, NaN probabilities, ...) or random (any names, dtypes, shapes and bytes); in some requests of every
kind, tensors are read from a registered shared-memory region, in bounds or not. Each one must be refused with an
error that says something, or answered exactly as the same computation answers it in-process
(python_backend/inprocess.py, the same files and code, on the region's bytes where the server read them); a crash of
that computation fails the test. Triton's own checks (names, dtypes, ranks, fixed dims, batch size, shared-memory
spans) are mirrored here. Afterwards the server answers correctly, every stub
is alive (the canary probe passes) and no region stays registered; the session's server must then stop cleanly,
which a request leaking tritonserver 2.51's in-flight count would prevent.
"""

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as system_shm
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from client import FeedbackClient
from python_backend.errors import BadRequest
from python_backend.heads import HeadCache, request_tenant
from python_backend.layout import read_config
from python_backend.tenants import check_tenant
from python_backend.text import decode_rows, encode_windows, rows_of
from server import probe
from tests.conftest import REPOSITORY
from tests.test_client import TEXTS, as_arrays, assert_same

MODELS = (
    *("feedback_text", "feedback", "feedback_routed", "feedback_tenant"),
    *("tokenizer", "transformer", "textcnn", "fuse"),
)
TRITON_TYPES = {"TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_FP32": "FP32", "TYPE_STRING": "BYTES"}
DTYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", 300))
REGION_BYTES = 4096


class Refuse(Exception):
    """The in-process computation refuses this request too (or Triton's own checks would)."""


def numpy_dtype(dtype: str):
    return {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": object}.get(
        dtype
    ) or np.dtype(dtype.lower())


class Models:
    """Each model's inputs as its config declares them, and its in-process computation."""

    def __init__(self, reference):
        self.reference = reference
        self.configs = {model: read_config(REPOSITORY / model) for model in MODELS}
        self.vocab = int(self.configs["transformer"].parameters["vocab_size"].string_value)
        self.max_bytes = int(self.configs["tokenizer"].parameters["max_text_bytes"].string_value)
        self.classes = len(reference.fuse.class_names)
        self.width = next(t.dims[0] for t in self.configs["transformer"].output if t.name == "EMBEDDING")

    def inputs(self, model: str) -> list[tuple[str, str, list[int], bool]]:
        """(name, dtype, dims, optional) per input."""
        return [(t.name, TRITON_TYPES[model_type(t)], list(t.dims), t.optional) for t in self.configs[model].input]

    def valid(self, rng, model: str) -> dict[str, np.ndarray]:
        batch, seq = int(rng.integers(1, 5)), int(rng.integers(1, 80))
        arrays = {}
        for name, *_ in self.inputs(model):
            if name in ("TEXT", "TENANT"):
                values = [TEXTS[int(i)].encode() for i in rng.integers(0, len(TEXTS), batch)]
                if name == "TENANT":
                    values = [str(rng.choice(["", "initech", "nobody-here"])).encode()] * batch
                arrays[name] = np.array(values, dtype=object).reshape(batch, 1)
            elif name.startswith("INPUT_IDS"):
                arrays[name] = rng.integers(0, self.vocab, (batch, seq)).astype(np.int64)
            elif name.startswith("ATTENTION_MASK"):
                lengths = rng.integers(1, seq + 1, (batch, 1))
                arrays[name] = (np.arange(seq) < lengths).astype(np.int64)
            elif name.endswith("_probs"):
                arrays[name] = rng.dirichlet(np.ones(self.classes), batch).astype(np.float32)
            elif name == "embedding":  # the sentence features, optional: sent half the time
                if rng.random() < 0.5:
                    arrays[name] = rng.standard_normal((batch, self.width)).astype(np.float32)
            elif name == "tenant":  # optional; a tenant the session's repository has no head for
                if rng.random() < 0.3:
                    arrays[name] = np.array([[b"initech"]] * batch, dtype=object)
            else:  # input_errors
                arrays[name] = np.zeros((batch, 1), np.int32)
        return arrays

    def near_valid(self, rng, model: str) -> dict[str, np.ndarray]:
        """The model's own names and dtypes, one thing wrong."""
        arrays = self.valid(rng, model)
        names = list(arrays)
        name = names[int(rng.integers(len(names)))]
        array = arrays[name]
        kind = int(rng.integers(6))
        if kind == 0:  # an empty batch
            return {key: value[:0] for key, value in arrays.items()}
        if kind == 1:  # one input of another batch size
            arrays[name] = np.concatenate([array, array[:1]])
        elif kind == 2:  # a rank too many or too few
            arrays[name] = array[..., None] if rng.random() < 0.5 else array.reshape(-1)
        elif array.dtype == object:
            bad = [b"\xff\xfe not utf-8", b"x" * (self.max_bytes + 1), b"", b"../etc", b"Two Words", b"a" * 40]
            array = array.copy()
            array[int(rng.integers(len(array))), 0] = bad[int(rng.integers(len(bad)))]
            arrays[name] = array
        elif name.startswith("INPUT_IDS"):
            if kind == 3:  # 513 tokens, for the ids and the mask alike
                mask = next(key for key in arrays if key.startswith("ATTENTION_MASK"))
                arrays[name] = rng.integers(0, self.vocab, (len(array), 513)).astype(np.int64)
                arrays[mask] = np.ones((len(array), 513), np.int64)
            else:
                array = array.copy()
                array.flat[int(rng.integers(array.size))] = [-1, self.vocab, 2**40][int(rng.integers(3))]
                arrays[name] = array
        elif name.startswith("ATTENTION_MASK") and kind == 3:  # a mask of another length than the ids
            arrays[name] = array[:, :-1] if array.shape[1] > 1 else np.concatenate([array, array], 1)
        elif name.startswith("ATTENTION_MASK"):
            array = array.copy()
            array.flat[int(rng.integers(array.size))] = [2, -1][int(rng.integers(2))]
            arrays[name] = array
        elif name.endswith("_probs"):
            array = array.copy()
            array.flat[int(rng.integers(array.size))] = [np.nan, -0.5, 1.5][int(rng.integers(3))]
            arrays[name] = array
        else:  # input_errors: a member flagged a row
            arrays[name] = np.full_like(array, [1, 2, 4][int(rng.integers(3))])
        return arrays

    def triton_checks(self, model: str, arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
        """What tritonserver itself refuses before any backend runs."""
        declared = {name: (dtype, dims, optional) for name, dtype, dims, optional in self.inputs(model)}
        required = {name for name, (_, _, optional) in declared.items() if not optional}
        if not required <= set(arrays) <= set(declared):
            raise Refuse("input names")
        batches = set()
        for name, array in arrays.items():
            dtype, dims, _ = declared[name]
            if dtypes[name] != dtype or array.ndim != 1 + len(dims):
                raise Refuse("dtype or rank")
            if any(d != -1 and d != s for d, s in zip(dims, array.shape[1:], strict=True)):
                raise Refuse("dims")
            batches.add(array.shape[0])
        if len(batches) != 1 or batches.pop() not in range(1, self.configs[model].max_batch_size + 1):
            raise Refuse("batch size")

    def compute(self, model: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The in-process answer; Refuse where the served model must refuse."""
        reference = self.reference
        try:
            if model == "tokenizer":
                rows = decode_rows(arrays["TEXT"], self.max_bytes)
                tokenized = encode_windows(reference.tokenizer, rows, reference.windows)
                if "TENANT" in arrays:  # handed on to each window's row
                    tokenized.append(rows_of(arrays["TENANT"], tokenized[2]))
                return dict(zip(self.outputs(model), tokenized, strict=False))
            if model == "feedback_text":
                return reference.classify(list(decode_rows(arrays["TEXT"], self.max_bytes)))
            if model == "feedback_tenant":  # the session's repository has no head: all refused
                texts = list(decode_rows(arrays["TEXT"], self.max_bytes))
                return reference.classify_tenant(texts, request_tenant(arrays["TENANT"]), HeadCache(REPOSITORY, 2**20))
            if model == "feedback_routed" and "TENANT" in arrays:
                tenants = {value.decode("utf-8", "replace") for value in arrays["TENANT"].ravel()}
                if len(tenants) != 1:
                    raise Refuse("more than one tenant")
                tenant = tenants.pop()
                if tenant:
                    check_tenant(tenant)  # a well-formed tenant without models of its own gets the default ensemble
            if model in ("feedback", "feedback_routed"):
                ids, mask = arrays["INPUT_IDS"], arrays["ATTENTION_MASK"]
                return reference.classify_ids(ids, mask)
            if model in ("transformer", "textcnn"):
                member = reference.members[reference.fuse.member_names.index(model)]
                ids, mask = (arrays[name] for name, *_ in self.inputs(model))
                return dict(zip(self.outputs(model), member(ids, mask), strict=True))
            outputs = reference.fuse.outputs(*reference.fuse.stacked(arrays))  # fuse, then the heads as it runs them
            (answer,) = HeadCache(REPOSITORY, 2**20).with_tenant_answers([outputs], [arrays.get("tenant")])
            if isinstance(answer, BadRequest):
                raise answer
            return dict(zip(self.outputs(model), answer, strict=False))
        except BadRequest as error:  # a clear refusal; any other exception is the reference crashing: a failure
            raise Refuse(str(error)) from None

    def outputs(self, model: str) -> list[str]:
        return [t.name for t in self.configs[model].output]


def model_type(tensor) -> str:
    return model_config_pb2.DataType.Name(tensor.data_type)


def random_request(rng, models: Models, model: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Any names (mostly the model's), dtypes and shapes."""
    names = [name for name, *_ in models.inputs(model)]
    if rng.random() < 0.3:
        names = names[: int(rng.integers(0, len(names) + 1))] + ["NOT_AN_INPUT"]
    arrays, dtypes = {}, {}
    for name in names:
        dtype = str(rng.choice(DTYPES))
        shape = [int(rng.choice([0, 1, 2, 3, 7, 64, 65, 513])) for _ in range(int(rng.integers(0, 4)))]
        if np.prod(shape) > 40_000:
            shape = shape[:1]
        if dtype == "BYTES":
            pick = [b"", b"\xff\xfe\x00", "ok 💸".encode(), rng.bytes(int(rng.integers(0, 64)))]
            values = [pick[int(rng.integers(len(pick)))] for _ in range(int(np.prod(shape)))]
            arrays[name] = np.array(values, dtype=object).reshape(shape)
        else:
            raw = rng.integers(-(2**40), 2**40, size=shape) if rng.random() < 0.5 else rng.integers(0, 700, size=shape)
            arrays[name] = raw.astype(numpy_dtype(dtype))
        dtypes[name] = dtype
    return arrays, dtypes


def dtypes_of(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    names = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}
    return {name: "BYTES" if a.dtype == object else names[a.dtype] for name, a in arrays.items()}


def placements(rng, arrays: dict[str, np.ndarray], dtypes: dict[str, str]) -> dict[str, tuple[int, int]]:
    """(offset, byte size) in the region for some of a request's fixed-size tensors: half of them exactly the
    tensor's size at an offset that fits, the others anything, mostly out of bounds or of the wrong size."""
    chosen = {}
    for name, array in arrays.items():
        if dtypes[name] == "BYTES" or rng.random() < 0.5:
            continue
        exact = array.size * np.dtype(numpy_dtype(dtypes[name])).itemsize
        if exact <= REGION_BYTES and rng.random() < 0.5:
            chosen[name] = (int(rng.integers(0, REGION_BYTES - exact + 1)), exact)
        else:
            chosen[name] = (int(rng.integers(0, REGION_BYTES + 8)), int(rng.integers(0, 2 * REGION_BYTES)))
    return chosen


def read_region(arrays, dtypes, placed: dict[str, tuple[int, int]], region: bytes) -> dict[str, np.ndarray]:
    """The tensors as the server reads them: each placed one from the region's bytes; Refuse where it must refuse
    (a span past the region's end, or a byte size that is not the tensor's)."""
    seen = dict(arrays)
    for name, (offset, size) in placed.items():
        dtype = np.dtype(numpy_dtype(dtypes[name]))
        if offset + size > REGION_BYTES or size != arrays[name].size * dtype.itemsize:
            raise Refuse("shared-memory span")
        seen[name] = np.frombuffer(region[offset : offset + size], dtype).reshape(arrays[name].shape)
    return seen


def send(rng, protocol, triton, model, arrays, dtypes, placed: dict[str, tuple[int, int]]):
    module = PROTOCOLS[protocol]
    tensors = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), dtypes[name])
        if name in placed:
            offset, size = placed[name]
            tensor.set_shared_memory("fuzz", size, offset)
        else:
            # HTTP: binary or JSON tensors (JSON cannot carry bytes that are not UTF-8).
            binary = {"binary_data": dtypes[name] == "BYTES" or bool(rng.random() < 0.7)} if protocol == "http" else {}
            tensor.set_data_from_numpy(array, **binary)
        tensors.append(tensor)
    return triton.infer(model, tensors)


def check_one(rng, protocol, triton, models: Models, model: str, region: bytes) -> str:
    """One request and its verdict: 'answered' (as in-process) or 'refused' (with a message); asserts otherwise."""
    kind = rng.choice(["valid", "near-valid", "near-valid", "random"])
    if kind == "random":
        arrays, dtypes = random_request(rng, models, model)
    else:
        arrays = models.valid(rng, model) if kind == "valid" else models.near_valid(rng, model)
        dtypes = dtypes_of(arrays)
    placed = placements(rng, arrays, dtypes) if rng.random() < 0.3 else {}  # some tensors read from the region
    shapes = {name: (dtypes[name], list(array.shape), placed.get(name)) for name, array in arrays.items()}
    try:
        models.triton_checks(model, arrays, dtypes)
        expected = models.compute(model, read_region(arrays, dtypes, placed, region))
    except Refuse:
        expected = "refuse"
    try:
        served = send(rng, protocol, triton, model, arrays, dtypes, placed)
    except InferenceServerException as error:
        message = str(error)
        assert "Socket closed" not in message and "connect" not in message.lower(), (model, shapes, message)
        assert len(error.message() or "") > 10, (model, shapes, message)  # it says what is wrong
        assert expected == "refuse", f"{model} {kind} {shapes}: refused ({message}), in-process answers"
        return "refused"
    assert expected != "refuse", f"{model} {kind} {shapes}: answered, but in-process refuses it"
    for name in models.outputs(model):  # the in-process answer may hold more (FEATURES, which only fuse gives out)
        got, value = served.as_numpy(name), expected.get(name)
        if value is None:  # an output the request did not make (fuse's FEATURES without the embedding)
            assert got is None, (model, kind, shapes, name)
            continue
        if value.dtype == object:
            assert got.tolist() == value.tolist(), (model, kind, shapes, name)
        else:
            np.testing.assert_allclose(got, value, atol=1e-5, rtol=0, err_msg=f"{model} {kind} {shapes} {name}")
    return "answered from shm" if placed else "answered"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_every_request_is_refused_clearly_or_answered_as_in_process(server, reference, protocol):
    rng = np.random.default_rng(int(os.environ.get("FUZZ_SEED", 8)))
    models = Models(reference)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    headers = server.admin_headers(protocol)
    triton = PROTOCOLS[protocol].InferenceServerClient(url)
    handle = system_shm.create_shared_memory_region("fuzz", f"/fuzz_{os.getpid()}_{protocol}", REGION_BYTES)
    try:
        region = rng.bytes(REGION_BYTES)
        system_shm.set_shared_memory_region(handle, [np.frombuffer(region, np.uint8)])
        triton.register_system_shared_memory("fuzz", f"/fuzz_{os.getpid()}_{protocol}", REGION_BYTES, headers=headers)
        outcomes = [
            check_one(rng, protocol, triton, models, str(rng.choice(MODELS)), region) for _ in range(REQUESTS // 2)
        ]
    finally:
        triton.unregister_system_shared_memory("fuzz", headers=headers)  # also when a check failed
        status = triton.get_system_shared_memory_status(headers=headers)
        system_shm.destroy_shared_memory_region(handle)
        triton.close()
    assert not (status.regions if protocol == "grpc" else status), status
    answered = len(outcomes) - outcomes.count("refused")
    print(f"\n{protocol}: {len(outcomes)} requests, {answered} answered as in-process "
          f"({outcomes.count('answered from shm')} with inputs from shared memory), "
          f"{outcomes.count('refused')} refused with a message")  # fmt: skip
    assert answered > len(outcomes) // 10 and outcomes.count("refused") > len(outcomes) // 3
    assert all(check.ok for check in probe.probe(f"http://{server.http_url}")), "a stub died"
    with FeedbackClient(url, protocol=protocol) as client:
        assert_same(as_arrays(client.classify(TEXTS)), reference.classify(TEXTS))

"""Live fuzzing: malformed requests of every kind over gRPC and HTTP, then the server must still be whole.

FUZZ_REQUESTS sets how many, split between the protocols (default 300, a few seconds; `make fuzz`: 6,000). Each
request gets a random model, input names, dtypes, shapes and bytes, and some a system shared-memory region
(registered with the admin key) at a random offset and size. Every answer must be a result or a Triton error, never
a dropped connection; afterwards the server answers correctly, every stub is alive (the canary probe passes) and no
region stays registered.
"""

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as system_shm
from tritonclient.utils import InferenceServerException

from client import FeedbackClient
from server import probe
from tests.test_client import TEXTS, as_arrays, assert_same

MODELS = {
    "feedback_text": ["TEXT"],
    "feedback": ["INPUT_IDS", "ATTENTION_MASK"],
    "tokenizer": ["TEXT"],
    "transformer": ["input_ids", "attention_mask"],
    "textcnn": ["input_ids__0", "attention_mask__1"],
    "fuse": ["transformer_probs", "textcnn_probs", "input_errors"],
}
DTYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", 300))
REGION_BYTES = 4096


def random_tensor(rng: np.random.Generator, dtype: str) -> np.ndarray:
    shape = [int(rng.choice([0, 1, 2, 3, 7, 64, 65, 513])) for _ in range(int(rng.integers(0, 4)))]
    if np.prod(shape) > 40_000:
        shape = shape[:1]
    if dtype == "BYTES":
        pick = [b"", b"\xff\xfe\x00", "ok 💸".encode(), rng.bytes(int(rng.integers(0, 64)))]
        values = [pick[int(rng.integers(len(pick)))] for _ in range(int(np.prod(shape)))]
        return np.array(values, dtype=object).reshape(shape)
    numpy_dtype = {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(dtype)
    numpy_dtype = numpy_dtype or np.dtype(dtype.lower())  # INT8, INT32, INT64, UINT64
    raw = rng.integers(-(2**40), 2**40, size=shape) if rng.random() < 0.5 else rng.integers(0, 700, size=shape)
    return raw.astype(numpy_dtype)


def fuzz_one(rng, protocol, triton, region, model: str) -> str:
    """Send one malformed (or, by chance, valid) request; return 'ok', or the kind of refusal."""
    module = PROTOCOLS[protocol]
    names = list(MODELS[model])
    if rng.random() < 0.2:
        names = names[: int(rng.integers(0, len(names) + 1))] + (["NOT_AN_INPUT"] if rng.random() < 0.5 else [])
    inputs = []
    for name in names:
        dtype = str(rng.choice(DTYPES))
        array = random_tensor(rng, dtype)
        tensor = module.InferInput(name, list(array.shape), dtype)
        if region and dtype != "BYTES" and rng.random() < 0.5:
            offset, size = int(rng.integers(-8, REGION_BYTES + 8)), int(rng.integers(0, 2 * REGION_BYTES))
            tensor.set_shared_memory("fuzz", size, max(offset, 0))
        else:
            # HTTP: binary or JSON tensors (JSON cannot carry bytes that are not UTF-8).
            binary = {"binary_data": dtype == "BYTES" or bool(rng.random() < 0.7)} if protocol == "http" else {}
            tensor.set_data_from_numpy(array, **binary)
        inputs.append(tensor)
    try:
        triton.infer(model, inputs)
        return "ok"
    except InferenceServerException as error:
        assert "Socket closed" not in str(error) and "connect" not in str(error).lower(), error
        return "refused"


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_malformed_requests_leave_the_server_whole(server, reference, protocol):
    rng = np.random.default_rng(int(os.environ.get("FUZZ_SEED", 8)))
    url = server.grpc_url if protocol == "grpc" else server.http_url
    headers = server.admin_headers(protocol)
    triton = PROTOCOLS[protocol].InferenceServerClient(url)
    handle = system_shm.create_shared_memory_region("fuzz", f"/fuzz_{os.getpid()}_{protocol}", REGION_BYTES)
    try:
        system_shm.set_shared_memory_region(handle, [np.frombuffer(rng.bytes(REGION_BYTES), np.uint8)])
        triton.register_system_shared_memory("fuzz", f"/fuzz_{os.getpid()}_{protocol}", REGION_BYTES, headers=headers)
        outcomes = [
            fuzz_one(rng, protocol, triton, rng.random() < 0.3, str(rng.choice(list(MODELS))))
            for _ in range(REQUESTS // 2)
        ]
        triton.unregister_system_shared_memory("fuzz", headers=headers)
        status = triton.get_system_shared_memory_status(headers=headers)
        assert not (status.regions if protocol == "grpc" else status), status
    finally:
        system_shm.destroy_shared_memory_region(handle)
        triton.close()
    assert outcomes.count("refused") > len(outcomes) // 2
    print(f"\n{protocol}: {len(outcomes)} fuzzed requests, {outcomes.count('refused')} refused with an error")
    assert all(check.ok for check in probe.probe(f"http://{server.http_url}")), "a stub died"
    with FeedbackClient(url, protocol=protocol) as client:
        assert_same(as_arrays(client.classify(TEXTS)), reference.classify(TEXTS))

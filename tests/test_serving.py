"""The served ensembles against the same computation in-process, over gRPC and HTTP, with plain tritonclient.

Shared memory, and the client library and CLI, are tested in test_client.py."""

import re
import time
from contextlib import contextmanager

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from export import datasets
from tests.conftest import POLL_SECS

OUTPUTS = ("PROBS", "LABEL", "MEMBER_PROBS", "WINDOWS")
TEXTS = datasets.synthetic().held_out.texts[:40] + ["", "ok", "прайс 💸 " * 200]
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}


@contextmanager
def client(server, protocol):
    """Closed after use: an open keep-alive connection would hold up the server's graceful shutdown."""
    module = PROTOCOLS[protocol]
    triton = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    try:
        yield triton
    finally:
        triton.close()


def infer(server, protocol, model, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    module = PROTOCOLS[protocol]
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else {np.int64: "INT64", np.int32: "INT32"}[array.dtype.type]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with client(server, protocol) as triton:
        result = triton.infer(model, inputs, outputs=[module.InferRequestedOutput(n) for n in OUTPUTS])
    return {name: result.as_numpy(name) for name in OUTPUTS}


def text_tensor(texts: list) -> np.ndarray:
    return np.array([[t if isinstance(t, bytes) else t.encode()] for t in texts], dtype=object)


def assert_same(served: dict, expected: dict) -> None:
    np.testing.assert_allclose(served["PROBS"], expected["PROBS"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["MEMBER_PROBS"], expected["MEMBER_PROBS"], atol=1e-5, rtol=0)
    assert served["LABEL"].tolist() == expected["LABEL"].tolist()
    assert served["WINDOWS"].tolist() == expected["WINDOWS"].tolist()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_feedback_text_matches_in_process(server, reference, protocol):
    served = infer(server, protocol, "feedback_text", {"TEXT": text_tensor(TEXTS)})
    assert_same(served, reference.classify(TEXTS))
    np.testing.assert_allclose(served["PROBS"].sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_feedback_matches_in_process(server, reference, protocol):
    ids, mask, _ = reference.tokenize(TEXTS)
    served = infer(server, protocol, "feedback", {"INPUT_IDS": ids, "ATTENTION_MASK": mask})
    assert_same(served, reference.classify_ids(ids, mask))


def test_feedback_accepts_any_length_up_to_the_limit(server, reference):
    ids, mask, _ = reference.tokenize(TEXTS[:5])
    short = int(mask.sum(1).max())
    served = infer(server, "grpc", "feedback", {"INPUT_IDS": ids[:, :short], "ATTENTION_MASK": mask[:, :short]})
    assert_same(served, reference.classify_ids(ids, mask))  # the members ignore padding


def test_labels_are_right_on_plain_comments(server):
    served = infer(
        server,
        "grpc",
        "feedback_text",
        {
            "TEXT": text_tensor(
                [
                    "the invoice charged me twice",
                    "support never answered my ticket",
                    "the dashboard layout is confusing",
                ]
            )
        },
    )
    assert served["LABEL"].ravel().tolist() == [b"billing", b"support", b"usability"]


def test_each_model_is_callable_alone(server, reference):
    with client(server, "grpc") as grpc:
        ids, mask, _ = reference.tokenize(TEXTS[:3])
        expected = reference.classify_ids(ids, mask)["MEMBER_PROBS"]
        for model, names, output, column in (
            ("transformer", ("INPUT_IDS", "ATTENTION_MASK"), "PROBS", 0),
            ("textcnn", ("INPUT_IDS__0", "ATTENTION_MASK__1"), "PROBS__0", 1),
        ):
            inputs = [grpcclient.InferInput(n, list(ids.shape), "INT64") for n in names]
            inputs[0].set_data_from_numpy(ids)
            inputs[1].set_data_from_numpy(mask)
            probs = grpc.infer(model, inputs).as_numpy(output)
            np.testing.assert_allclose(probs, expected[:, column], atol=1e-5, rtol=0)
        text = grpcclient.InferInput("TEXT", [3, 1], "BYTES")
        text.set_data_from_numpy(text_tensor(TEXTS[:3]))
        tokens = grpc.infer("tokenizer", [text])
        np.testing.assert_array_equal(tokens.as_numpy("INPUT_IDS"), ids)


BAD_IDS = {
    "wrong dtype": (
        {"INPUT_IDS": np.ones((1, 8), np.int32), "ATTENTION_MASK": np.ones((1, 8), np.int32)},
        "INT32.*expects 'INT64'",
    ),
    "wrong rank": (
        {"INPUT_IDS": np.ones((1, 2, 8), np.int64), "ATTENTION_MASK": np.ones((1, 2, 8), np.int64)},
        "unexpected shape",
    ),
    "sequence too long": (
        {"INPUT_IDS": np.ones((1, 513), np.int64), "ATTENTION_MASK": np.ones((1, 513), np.int64)},
        r"sequence length must be in the supported range 1\.\.512",
    ),
    "mask of another length": (  # failed the members' graphs, leaking 2.51's in-flight count, until they aligned it
        {"INPUT_IDS": np.ones((2, 8), np.int64), "ATTENTION_MASK": np.ones((2, 9), np.int64)},
        r"the same for ids and mask",
    ),
    "empty batch": (
        {"INPUT_IDS": np.ones((0, 8), np.int64), "ATTENTION_MASK": np.ones((0, 8), np.int64)},
        "got 0|empty batch",
    ),  # Triton core or fuse, whichever sees it first
    "id out of vocabulary": (
        {"INPUT_IDS": np.full((2, 8), 10**6), "ATTENTION_MASK": np.ones((2, 8), np.int64)},
        r"token ids must be in \[0, \d+\)",
    ),
    "mask not 0/1": (
        {"INPUT_IDS": np.ones((1, 8), np.int64), "ATTENTION_MASK": np.full((1, 8), 2, np.int64)},
        "values must be 0 or 1",
    ),
    "negative id": (
        {"INPUT_IDS": np.full((1, 8), -3), "ATTENTION_MASK": np.ones((1, 8), np.int64)},
        r"token ids must be in \[0, \d+\)",
    ),
}
BAD_TEXT = {
    "not UTF-8": ([b"\xff\xfe broken"], "not valid UTF-8"),
    "1 MB text": ([b"a" * (1 << 20)], "1048576 bytes, the limit is 16384"),
    "empty batch": ([], "got 0|empty batch"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_ids_get_a_clear_error_and_the_server_keeps_serving(server, reference, protocol, case):
    arrays, message = BAD_IDS[case]
    with pytest.raises(InferenceServerException, match=message) as error:
        infer(server, protocol, "feedback", arrays)
    assert re.search("INVALID_ARG|400", str(error.value.status())), error.value.status()
    test_feedback_matches_in_process(server, reference, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_TEXT)
def test_bad_text_gets_a_clear_error_and_the_server_keeps_serving(server, reference, protocol, case):
    rows, message = BAD_TEXT[case]
    tensor = text_tensor(rows) if rows else np.empty((0, 1), dtype=object)
    with pytest.raises(InferenceServerException, match=message):
        infer(server, protocol, "feedback_text", {"TEXT": tensor})
    test_feedback_text_matches_in_process(server, reference, protocol)


def test_bad_row_in_a_dynamic_batch_fails_only_its_own_request(server, reference):
    """Concurrent requests share one execute(); the invalid one must not take the others down with it."""
    with client(server, "grpc") as grpc:
        good = text_tensor(TEXTS[:4])
        pending = []
        for i in range(24):
            tensor = grpcclient.InferInput("TEXT", [4, 1], "BYTES")
            tensor.set_data_from_numpy(text_tensor([b"\xff"] * 4) if i % 6 == 0 else good)
            done = []
            grpc.async_infer("feedback_text", [tensor], lambda result, error, done=done: done.append((result, error)))
            pending.append((i, done))
        deadline = time.monotonic() + 60
        while any(not done for _, done in pending) and time.monotonic() < deadline:
            time.sleep(0.01)
        expected = reference.classify(TEXTS[:4])["PROBS"]
        for i, done in pending:
            result, error = done[0]
            if i % 6 == 0:
                assert error is not None and "not valid UTF-8" in str(error)
            else:
                assert error is None, error
                np.testing.assert_allclose(result.as_numpy("PROBS"), expected, atol=1e-5, rtol=0)


def test_nothing_reloads_after_start(server):
    """Poll mode reloads a model whose files change; bytecode or scratch files in the repository would do that."""
    time.sleep(3 * POLL_SECS)
    loads = re.findall(r"successfully loaded '(\w+)'", server.log.read_text(errors="replace"))
    assert sorted(loads) == sorted(set(loads)), f"models loaded more than once: {loads}"
    assert set(loads) == {
        "feedback",
        "feedback_text",
        "feedback_tenant",
        "feedback_routed",
        "tokenizer",
        "transformer",
        "textcnn",
        "fuse",
    }

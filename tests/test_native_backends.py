"""The members run in Triton's own onnxruntime and pytorch backends (built by server/native_backends.py), and a bad
request that dynamic batching puts beside good ones fails alone, or is made harmless in the graph."""

import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tests.test_serving import TEXTS, client

MEMBERS = {  # model -> (input names, output names), as export/ writes them
    "transformer": (("INPUT_IDS", "ATTENTION_MASK"), ("PROBS", "INPUT_ERRORS")),
    "textcnn": (("INPUT_IDS__0", "ATTENTION_MASK__1"), ("PROBS__0", "INPUT_ERRORS__1")),
}


def mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {Path(line.split(maxsplit=5)[5].strip()).name for line in maps if len(line.split(maxsplit=5)) == 6}


def children_argv(pid: int) -> list[bytes]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [Path(f"/proc/{child}/cmdline").read_bytes() for child in children]


def test_members_are_served_by_the_native_backends(server):
    """Asked of the running server itself: the libraries it mapped, and which models have a Python stub."""
    mapped = mapped_files(server.pid)
    for library in ("libtriton_onnxruntime.so", "libtriton_pytorch.so", "libtorch_cpu.so", "libonnxruntime.so.1."):
        assert any(name.startswith(library) for name in mapped), f"tritonserver has not loaded {library}"
    stubs = [argv for argv in children_argv(server.pid) if b"triton_python_backend_stub" in argv]
    assert stubs, "the Python steps should still have their stubs"
    for member in MEMBERS:
        assert not [argv for argv in stubs if f"/{member}/".encode() in argv], f"{member} runs in a Python stub"


def statistics(grpc, model: str) -> tuple[int, int]:
    (stats,) = grpc.get_inference_statistics(model).model_stats
    return stats.inference_count, stats.execution_count


def send_concurrently(grpc, model: str, requests: list[list]) -> list:
    """All requests in flight at once, so the dynamic batcher groups them; (result, error) per request, in order."""
    outcomes = [[] for _ in requests]
    for inputs, outcome in zip(requests, outcomes, strict=True):
        grpc.async_infer(model, inputs, lambda result, error, outcome=outcome: outcome.append((result, error)))
    deadline = time.monotonic() + 60
    while not all(outcomes) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(outcomes), "requests still unanswered after 60 s"
    return [outcome[0] for outcome in outcomes]


def member_inputs(names, ids: np.ndarray, mask: np.ndarray) -> list:
    tensors = [grpcclient.InferInput(name, list(ids.shape), "INT64") for name in names]
    tensors[0].set_data_from_numpy(ids)
    tensors[1].set_data_from_numpy(mask)
    return tensors


def test_bad_ids_batched_with_good_requests_are_harmless_and_flagged(server, reference):
    """Sent straight to a member, out-of-vocabulary ids and a non-0/1 mask fail nothing: the graph masks them out,
    answers the good requests of the same batch exactly, and flags the bad ones in INPUT_ERRORS."""
    ids, mask, _ = reference.tokenize(TEXTS[:4])
    expected = reference.classify_ids(ids, mask)["MEMBER_PROBS"]
    bad_ids, bad_mask = ids.copy(), mask.copy()
    bad_ids[0, 1], bad_ids[1, 2], bad_mask[2, 0] = 10**9, -5, 7
    with client(server, "grpc") as grpc:
        for column, (model, (inputs, outputs)) in enumerate(MEMBERS.items()):
            before = statistics(grpc, model)
            bad = [i % 4 == 0 for i in range(48)]
            requests = [member_inputs(inputs, *((bad_ids, bad_mask) if b else (ids, mask))) for b in bad]
            for is_bad, (result, error) in zip(bad, send_concurrently(grpc, model, requests), strict=True):
                assert error is None, (model, repr(error.message()))
                probs, errors = result.as_numpy(outputs[0]), result.as_numpy(outputs[1]).ravel()
                if is_bad:
                    assert errors.tolist() == [1, 1, 2, 0] and np.isfinite(probs).all()
                else:
                    assert errors.tolist() == [0, 0, 0, 0]
                    np.testing.assert_allclose(probs, expected[:, column], atol=1e-5, rtol=0)
            inferences, executions = np.subtract(statistics(grpc, model), before)
            assert executions < inferences, f"{model}: no request was batched with another ({executions} runs)"


def test_bad_ids_through_the_ensemble_fail_alone_under_load(server, reference):
    ids, mask, _ = reference.tokenize(TEXTS[:4])
    expected = reference.classify_ids(ids, mask)["PROBS"]
    bad_ids = ids.copy()
    bad_ids[3, 0] = 10**6
    with client(server, "grpc") as grpc:
        bad = [i % 5 == 0 for i in range(40)]
        requests = [member_inputs(("INPUT_IDS", "ATTENTION_MASK"), bad_ids if b else ids, mask) for b in bad]
        for is_bad, (result, error) in zip(bad, send_concurrently(grpc, "feedback", requests), strict=True):
            if is_bad:
                assert error is not None and r"token ids must be in [0, " in str(error) and "(rows [3])" in str(error)
            else:
                assert error is None, repr(error.message())
                np.testing.assert_allclose(result.as_numpy("PROBS"), expected, atol=1e-5, rtol=0)


def test_comments_of_different_lengths_batch_together_and_each_gets_its_answer_alone(server, reference):
    """Ragged batching: no two comments here have the same token count, and a long one is several windows, so a
    member execution that holds more than one request mixed lengths; each answer is the one the comment gets alone."""
    by_length = {len(reference.tokenizer.encode(text).ids): text for text in TEXTS}
    texts = list(by_length.values())[:16] + [" ".join(TEXTS[:30])]  # the last one: a comment of several windows
    assert len(texts) == 17
    requests = []
    for text in texts:
        tensor = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
        requests.append([tensor])
    with client(server, "grpc") as grpc:
        before = statistics(grpc, "transformer")
        answers = send_concurrently(grpc, "feedback_text", requests)
        after = statistics(grpc, "transformer")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    expected = [reference.classify([text]) for text in texts]
    for (result, error), alone in zip(answers, expected, strict=True):
        assert error is None, error
        np.testing.assert_allclose(result.as_numpy("PROBS"), alone["PROBS"], atol=1e-5, rtol=0)
        assert result.as_numpy("WINDOWS").tolist() == alone["WINDOWS"].tolist()
    assert expected[-1]["WINDOWS"][0, 0] > 1
    assert inferences == sum(int(e["WINDOWS"][0, 0]) for e in expected)  # rows: a window each
    print(f"{inferences} rows in {executions} transformer executions")
    assert executions < len(texts), "every request ran alone: requests of different lengths did not batch"

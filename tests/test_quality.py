"""Quality on comments no generator wrote (export/data/handwritten_eval.csv, never trained or tuned on), and the
realistic profile's pretrained member served as computed in-process (issue #20)."""

from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export import evaluate
from python_backend.inprocess import InProcessEnsemble
from tests.conftest import REPOSITORY, run_server

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests

DEFAULT_BAR = 0.60  # the small profile: members trained from scratch on the synthetic corpus
REALISTIC_BAR = 0.80  # the minilm profile: the pretrained all-MiniLM-L6-v2 member


@pytest.fixture(scope="module")
def minilm_repository():
    from perf.repositories import for_profile

    return for_profile("minilm")  # exported into build/ once (about 50 s), then reused


def test_handwritten_evaluation_set_covers_every_class():
    texts, labels = evaluate.read(evaluate.HANDWRITTEN)
    classes = InProcessEnsemble(REPOSITORY).fuse.class_names
    assert len(texts) >= 60 and len(set(texts)) == len(texts)
    assert Counter(labels).keys() == set(classes) and min(Counter(labels).values()) >= 10


def test_default_ensemble_reaches_its_bar_on_handwritten_comments():
    scores = evaluate.accuracies(REPOSITORY)
    print(f"default profile on {evaluate.HANDWRITTEN.name}: {scores}")
    assert scores["ensemble"] >= DEFAULT_BAR, scores


def test_realistic_ensemble_reaches_its_bar_on_handwritten_comments(minilm_repository):
    scores = evaluate.accuracies(minilm_repository)
    print(f"minilm profile on {evaluate.HANDWRITTEN.name}: {scores}")
    assert scores["ensemble"] >= REALISTIC_BAR, scores


def test_pretrained_member_is_served_as_computed_in_process(minilm_repository, tmp_path):
    texts, _ = evaluate.read(evaluate.HANDWRITTEN)
    expected = InProcessEnsemble(minilm_repository).classify(texts)
    with run_server(minilm_repository, tmp_path / "server.log") as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        served = triton.infer("feedback_text", [text])
    for name in ("PROBS", "MEMBER_PROBS"):
        np.testing.assert_allclose(served.as_numpy(name), expected[name], atol=1e-5, rtol=0)

"""Quality on comments no generator wrote (export/data/, never trained on), and what the real task needs of long
comments: read whole, as windows, and answered as computed in-process."""

from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from export import evaluate
from python_backend.inprocess import InProcessEnsemble
from tests.conftest import REPOSITORY

pytestmark = pytest.mark.slow  # servers of their own, or long runs: after the other tests

DEFAULT_BAR = 0.85  # the accurate profile: the pretrained all-MiniLM-L6-v2 member, int8
FAST_BAR = 0.60  # the fast profile: members trained from scratch on the synthetic corpus
SHORT_FILES = [path for path in evaluate.FILES if path.name.startswith("handwritten")]
# The topic (a double charge: billing) comes after 64 tokens of a story that names no topic; cut at 64 tokens, as
# the tokenizer did before, the comment says nothing about it.
LATE_TOPIC = (
    "So here is what happened over the last couple of weeks, and I want to lay it out in order because a few people "
    "on our side have asked me about it and I would rather have one clear account written down somewhere. We started "
    "the month as usual, the team was busy with the quarterly planning and nobody touched the account settings at "
    "all. Then on the fifth I looked at our credit card statement and you had charged us twice for the same monthly "
    "invoice, two identical payments one day apart, and I need the duplicate charge refunded."
)


@pytest.fixture(scope="module")
def fast_repository():
    from perf.repositories import for_profile

    return for_profile("fast")  # exported into build/ once (about 30 s), then reused


def served_text(server, texts: list[str]) -> dict[str, np.ndarray]:
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        text = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        result = triton.infer("feedback_text", [text])
        return {name: result.as_numpy(name) for name in ("PROBS", "LABEL", "MEMBER_PROBS", "WINDOWS")}
    finally:
        triton.close()


def test_handwritten_evaluation_sets_cover_every_class():
    classes = InProcessEnsemble(REPOSITORY).fuse.class_names
    seen = set()
    for path in evaluate.FILES:
        texts, labels = evaluate.read(path)
        assert len(set(texts)) == len(texts) and Counter(labels).keys() == set(classes), path
        assert not seen & set(texts), f"{path.name} repeats comments of another file"
        seen |= set(texts)
    assert sum(len(evaluate.read(path)[0]) for path in SHORT_FILES) >= 180


def test_default_ensemble_reaches_its_bar_on_handwritten_comments():
    right = rows = 0
    for path in SHORT_FILES:
        count = len(evaluate.read(path)[0])
        right += round(evaluate.accuracies(REPOSITORY, path)["ensemble"] * count)
        rows += count
    print(f"default profile on {rows} hand-written comments: {right / rows:.3f}")
    assert right / rows >= DEFAULT_BAR, (right, rows)


def test_fast_ensemble_reaches_its_bar_on_handwritten_comments(fast_repository):
    scores = evaluate.accuracies(fast_repository)
    print(f"fast profile on {evaluate.HANDWRITTEN.name}: {scores}")
    assert scores["ensemble"] >= FAST_BAR, scores


def test_a_2000_word_comment_is_read_whole_as_windows(server, reference):
    long = evaluate.read(evaluate.DATA / "long_comments.csv")[0]
    words = " ".join(long).split()
    comment = " ".join((words * (2000 // len(words) + 1))[:2000])
    assert len(comment.encode()) <= 16384  # the refusal limit stays; this is within it
    tokens = len(reference.tokenizer.encode(comment).ids)
    windows = len(range(0, tokens - 2 - 254, 190)) + 1  # 256-token windows sharing 64: python_backend/text.py
    served = served_text(server, [comment, "the invoice charged me twice"])
    expected = reference.classify([comment, "the invoice charged me twice"])
    assert served["WINDOWS"][:, 0].tolist() == expected["WINDOWS"][:, 0].tolist() == [windows, 1] and windows >= 10
    np.testing.assert_allclose(served["PROBS"], expected["PROBS"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["MEMBER_PROBS"], expected["MEMBER_PROBS"], atol=1e-5, rtol=0)
    assert served["LABEL"].tolist() == expected["LABEL"].tolist()


def test_a_topic_named_after_the_64th_token_labels_the_comment(server, reference):
    ids = reference.tokenizer.encode(LATE_TOPIC).ids
    assert len(ids) > 64 and "charged" not in reference.tokenizer.decode(ids[:64])
    served = served_text(server, [LATE_TOPIC])
    assert served["LABEL"][0, 0] == b"billing" and served["WINDOWS"][0, 0] == 1
    cut = reference.tokenizer.decode(ids[1:63])  # what the members read when comments were cut to 64 tokens
    assert served_text(server, [cut])["LABEL"][0, 0] != b"billing", "the test comment gives its topic away early"


def test_long_handwritten_comments_are_served_as_computed_in_process(server, reference):
    texts, _ = evaluate.read(evaluate.DATA / "long_comments.csv")
    served, expected = served_text(server, texts), reference.classify(texts)
    for name in ("PROBS", "MEMBER_PROBS"):
        np.testing.assert_allclose(served[name], expected[name], atol=1e-5, rtol=0)
    assert served["LABEL"].tolist() == expected["LABEL"].tolist()

"""A comment pays for its own tokens (issue #27), without a server: the members compute on real tokens only and
give the padded computation's answer, ragged rows equal rows alone, and a long comment is read as windows whose
answers the fuse step averages."""

import numpy as np
import pytest
import torch
from torch import nn

from client.predictions import MAX_TEXT_BYTES, chunks, text_inputs
from export import minilm
from export.members import SMALL_TRANSFORMER, RaggedInputs, TextCNN, TransformerClassifier
from python_backend.errors import BadRequest
from python_backend.fuse import BAD_LENGTH, ID_OUT_OF_RANGE, pool_windows
from python_backend.inprocess import ragged
from python_backend.text import Windows, encode_windows, split

pytestmark = pytest.mark.unit

rng = np.random.default_rng(0)
LENGTHS = [3, 17, 9, 1, 30, 50, 120]  # every length group of export/packing.py


def rows_of(lengths: list[int], vocab: int = 50) -> list[np.ndarray]:
    return [rng.integers(1, vocab, size=(1, length)) for length in lengths]


def padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(row.shape[1] for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, : row.shape[1]] = torch.from_numpy(row[0])
        mask[index, : row.shape[1]] = 1
    return ids, mask


def textcnn_on_padding(model: TextCNN, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Kim's TextCNN as it is usually written, convolving the padding too: what the packed one must equal."""
    x = (model.tokens(ids) * mask[..., None]).transpose(1, 2)
    pooled = []
    for conv in model.convs:
        k = conv.kernel_size[0]
        h = torch.relu(conv(nn.functional.pad(x, (0, k - 1))))
        pooled.append((h * mask[:, None, :]).amax(-1))
    return model.head(torch.cat(pooled, 1)).softmax(-1)


def test_packed_textcnn_equals_the_convolution_over_padding():
    torch.manual_seed(0)
    model = TextCNN(torch.randn(50, 16), 6).eval()
    ids, mask = padded(rows_of(LENGTHS))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids, mask), textcnn_on_padding(model, ids, mask), atol=1e-6, rtol=0)


def test_packed_minilm_equals_bertmodel_on_a_padded_batch():
    torch.manual_seed(0)
    classifier = minilm.SentenceClassifier(6).eval()
    ids, mask = padded(rows_of(LENGTHS, vocab=30000))
    with torch.inference_mode():
        hidden = classifier.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask[..., None].float()
        expected = nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
        torch.testing.assert_close(classifier.embed(ids, mask), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("member", ["transformer", "textcnn"])
def test_ragged_rows_get_the_answer_each_gets_alone(member):
    torch.manual_seed(0)
    table = torch.randn(50, 16)
    model = TransformerClassifier(table, 6, SMALL_TRANSFORMER) if member == "transformer" else TextCNN(table, 6)
    graph = RaggedInputs(model, vocab_size=50, max_seq_len=128)
    rows = rows_of(LENGTHS)
    with torch.inference_mode():
        together, errors = graph(*(torch.from_numpy(a) for a in ragged(rows, [np.ones_like(r) for r in rows])))
        alone = [graph(*(torch.from_numpy(a) for a in ragged(r, np.ones_like(r))))[0] for r in rows]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-6, rtol=0)
    assert errors.sum() == 0


def test_a_bad_row_is_flagged_and_leaves_its_neighbours_alone():
    torch.manual_seed(0)
    graph = RaggedInputs(TextCNN(torch.randn(50, 16), 6), vocab_size=50, max_seq_len=20)
    good = rows_of([5, 7])
    out_of_vocab = np.array([[3, 99, 4]])
    short_mask = np.ones((1, 4), np.int64), np.ones((1, 3), np.int64)  # ids of 4, a mask of 3
    too_long = rows_of([25])[0]
    ids = [good[0], out_of_vocab, short_mask[0], too_long, good[1]]
    masks = [
        np.ones_like(good[0]),
        np.ones_like(out_of_vocab),
        short_mask[1],
        np.ones_like(too_long),
        np.ones_like(good[1]),
    ]
    with torch.inference_mode():
        probs, errors = graph(*(torch.from_numpy(a) for a in ragged(ids, masks)))
        alone = [graph(*(torch.from_numpy(a) for a in ragged(r, np.ones_like(r))))[0] for r in good]
    assert errors[:, 0].tolist() == [0, ID_OUT_OF_RANGE, BAD_LENGTH, BAD_LENGTH, 0]
    torch.testing.assert_close(probs[[0, 4]], torch.cat(alone), atol=1e-6, rtol=0)
    with torch.inference_mode():  # a batch without a single real token: every row flagged, nothing fails
        bad = [np.full((1, 4), 10**6), np.zeros((1, 0), np.int64)]
        probs, errors = graph(*(torch.from_numpy(a) for a in ragged(bad, [np.ones_like(r) for r in bad])))
    assert errors[:, 0].tolist() == [ID_OUT_OF_RANGE, BAD_LENGTH] and probs.shape == (2, 6)


def test_a_long_comment_is_read_as_overlapping_windows_that_cover_it():
    tokenizer = minilm.tokenizer()
    encoding = tokenizer.encode(" ".join(f"word{i}" for i in range(2000)))
    windows = split(encoding, Windows(tokens=256, overlap=64))
    body, width, stride = encoding.ids[1:-1], 254, 254 - 64
    starts = [*range(0, len(body) - width, stride), len(body) - width]  # the last one ends with the comment
    assert [w[1:-1] for w in windows] == [body[start : start + width] for start in starts]
    assert all(w[0] == encoding.ids[0] and w[-1] == encoding.ids[-1] for w in windows)  # [CLS] ... [SEP] each
    short = tokenizer.encode("short comment")
    assert split(short, Windows()) == [short.ids]


def test_encode_windows_counts_each_comments_windows_and_refuses_too_many():
    tokenizer = minilm.tokenizer()
    long = " ".join(["refund"] * 600)
    ids, mask, windows = encode_windows(tokenizer, np.array(["hi", long, "ok then"], dtype=object), Windows())
    body = len(tokenizer.encode(long).ids) - 2
    expected = len(range(0, body - 254, 190)) + 1
    assert windows[:, 0].tolist() == [1] + [expected] * expected + [1]
    assert mask.sum(1).tolist()[0] == 3 and ids.shape == mask.shape == (expected + 2, 256)
    with pytest.raises(BadRequest, match="more than 5 windows"):
        encode_windows(tokenizer, np.array([long, long], dtype=object), Windows(max_rows=5))
    with pytest.raises(BadRequest, match="reads at most 256"):
        encode_windows(tokenizer, np.array([long], dtype=object), Windows(per_comment=1))


def test_pool_windows_averages_each_comments_rows():
    stacked = rng.random((6, 2, 3)).astype(np.float32)
    windows = np.array([[1], [3], [3], [3], [2], [2]], np.int32)
    pooled, counts = pool_windows(stacked, windows)
    np.testing.assert_allclose(pooled, [stacked[0], stacked[1:4].mean(0), stacked[4:].mean(0)], rtol=1e-6)
    assert counts[:, 0].tolist() == [1, 3, 2]
    assert pool_windows(stacked, None)[0] is stacked
    for bad in ([[1], [3], [3], [1], [2], [2]], [[2]] * 5 + [[1]], [[0]] * 6):
        with pytest.raises(BadRequest, match="windows"):
            pool_windows(stacked, np.array(bad, np.int32))


def test_the_client_keeps_each_text_request_within_the_servers_window_limit():
    texts = ["x" * 10_000] * 7 + ["short"] * 100
    parts = chunks(text_inputs(texts))
    assert sum(len(part["TEXT"]) for part in parts) == len(texts)
    assert all(len(part["TEXT"]) <= 64 for part in parts)
    assert all(sum(len(row[0]) for row in part["TEXT"]) <= MAX_TEXT_BYTES for part in parts)
    assert len(chunks(text_inputs(["y" * 40_000]))) == 1  # one comment over the budget goes alone

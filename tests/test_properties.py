"""Property-based tests (hypothesis) of the Python-backend logic: whatever a client sends, the functions either
return well-formed arrays or raise BadRequest with a message; nothing else escapes to crash a model instance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from perf.app_checks import check_token_inputs
from python_backend.batching import run_batched
from python_backend.errors import BadRequest
from python_backend.fuse import labels, stack_members, stacking, weighted_mean
from python_backend.text import decode_rows

pytestmark = pytest.mark.unit

VOCAB, MAX_SEQ, CLASSES = 1000, 512, 6
DTYPES = st.sampled_from([np.int64, np.int32, np.int8, np.uint64, np.float32, np.float64, np.bool_, np.object_])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)
settings.register_profile("backend", max_examples=200, deadline=None)
settings.load_profile("backend")


def arrays(dtype=DTYPES, shape=SHAPES):
    def build(draw_dtype, draw_shape):
        if np.dtype(draw_dtype) == np.object_:
            return hnp.arrays(object, draw_shape, elements=st.one_of(st.binary(max_size=8), st.integers(), st.text()))
        return hnp.arrays(draw_dtype, draw_shape)

    return st.tuples(dtype, shape).flatmap(lambda pair: build(*pair))


@given(arrays(), arrays())
def test_token_checks_refuse_anything_malformed_with_bad_request(ids, mask):
    try:
        check_token_inputs(ids, mask, VOCAB, MAX_SEQ)
    except BadRequest as error:
        assert str(error)
        return
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape and ids.ndim == 2
    assert 1 <= ids.shape[1] <= MAX_SEQ and ids.shape[0] >= 1
    assert ids.min() >= 0 and ids.max() < VOCAB and set(np.unique(mask)) <= {0, 1}


@given(
    st.tuples(st.integers(1, 5), st.integers(1, 8)).flatmap(
        lambda shape: st.tuples(  # one shape for both: every example is a valid pair
            hnp.arrays(np.int64, shape, elements=st.integers(0, VOCAB - 1)),
            hnp.arrays(np.int64, shape, elements=st.integers(0, 1)),
        )
    )
)
def test_valid_token_inputs_pass(pair):
    ids, mask = pair
    check_token_inputs(ids, mask, VOCAB, MAX_SEQ)


ROW = st.one_of(st.binary(max_size=64), st.text(max_size=32), st.text(max_size=32).map(str.encode))


@given(st.lists(ROW, max_size=6), st.integers(0, 3), st.integers(1, 80))
def test_decode_rows_gives_text_rows_or_a_bad_request(rows, width, max_bytes):
    text = np.empty((len(rows), width), dtype=object)
    for column in range(width):
        text[:, column] = rows
    try:
        decoded = decode_rows(text, max_bytes)
    except BadRequest as error:
        assert str(error)
        return
    assert width == 1 and len(decoded) == len(rows) >= 1
    for raw, row in zip(rows, decoded, strict=True):
        raw = raw if isinstance(raw, bytes) else raw.encode()
        assert row.encode() == raw and len(raw) <= max_bytes


PROBS = st.integers(0, 4).flatmap(
    lambda batch: st.lists(
        arrays(st.sampled_from([np.float32, np.float64, np.int64]), st.sampled_from([(batch, CLASSES), (batch, 5)])),
        min_size=1,
        max_size=3,
    )
)


@given(PROBS)
def test_fuse_accepts_only_probabilities_and_keeps_rows_normalized(members):
    try:
        stacked = stack_members(members, CLASSES)
    except BadRequest as error:
        assert str(error)
        return
    assert stacked.shape == (len(members[0]), len(members), CLASSES)
    row_sums = stacked.sum(axis=2)
    probs = weighted_mean(stacked, np.ones(len(members)))
    np.testing.assert_allclose(probs.sum(axis=1), row_sums.mean(axis=1), rtol=1e-5, atol=1e-5)
    coef = np.zeros((len(members) * CLASSES, CLASSES), np.float32)
    np.testing.assert_allclose(stacking(stacked, coef, np.zeros(CLASSES, np.float32)).sum(axis=1), 1, rtol=1e-5)
    assert labels(probs, list("abcdef")).shape == (len(probs), 1)


@given(st.lists(arrays(st.sampled_from([np.float32, np.int64]), hnp.array_shapes(max_dims=3, max_side=4)), max_size=8))
def test_run_batched_answers_every_request_alone_or_with_its_shape_group(requests):
    def parse(x):
        if x.ndim == 0 or x.shape[0] == 0:
            raise BadRequest("no batch dimension")
        return (x,)

    results = run_batched([(x,) for x in requests], parse, lambda x: (x,))
    assert len(results) == len(requests)
    for x, result in zip(requests, results, strict=True):
        if isinstance(result, BadRequest):
            assert x.ndim == 0 or x.shape[0] == 0
        else:
            np.testing.assert_array_equal(result[0], x)

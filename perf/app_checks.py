"""Checks of token-id inputs in Python, as the web apps that Triton is measured against (perf/apps.py) do them; each
raises BadRequest saying what was expected. Triton's members repair and flag bad ids in their graphs instead."""

import numpy as np

from python_backend.errors import BadRequest


def check_batch(name: str, array: np.ndarray, dtype: np.dtype, rank: int) -> None:
    if array.dtype != dtype:
        raise BadRequest(f"{name}: expected {np.dtype(dtype).name}, got {array.dtype.name}")
    if array.ndim != rank:
        raise BadRequest(f"{name}: expected rank {rank}, got shape {list(array.shape)}")
    if array.shape[0] == 0:
        raise BadRequest(f"{name}: empty batch (0 rows); send at least one row")


def check_token_inputs(input_ids: np.ndarray, attention_mask: np.ndarray, vocab_size: int, max_seq_len: int) -> None:
    """INPUT_IDS and ATTENTION_MASK: int64 [batch, seq], 1 <= seq <= max_seq_len, ids in range, mask of 0/1."""
    check_batch("INPUT_IDS", input_ids, np.int64, 2)
    check_batch("ATTENTION_MASK", attention_mask, np.int64, 2)
    if input_ids.shape != attention_mask.shape:
        raise BadRequest(
            f"INPUT_IDS {list(input_ids.shape)} and ATTENTION_MASK {list(attention_mask.shape)} "
            "must have the same shape"
        )
    seq = input_ids.shape[1]
    if not 1 <= seq <= max_seq_len:
        raise BadRequest(f"sequence length {seq} is outside the supported range 1..{max_seq_len}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise BadRequest(f"INPUT_IDS: token ids must be in [0, {vocab_size}), got values in [{low}, {high}]")
    if int(attention_mask.min()) < 0 or int(attention_mask.max()) > 1:  # np.isin took 90 µs a call
        raise BadRequest("ATTENTION_MASK: values must be 0 or 1")

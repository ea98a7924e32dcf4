"""Text rows in, token ids out, with the limits that keep one bad row from hurting the server."""

import numpy as np
from tokenizers import Tokenizer

from python_backend.errors import BadRequest


def decode_rows(text: np.ndarray, max_bytes: int) -> np.ndarray:
    """TEXT is BYTES [batch, 1]: one UTF-8 string per row, each at most max_bytes long. Returns str rows [batch]."""
    if text.ndim != 2 or text.shape[1] != 1:
        raise BadRequest(f"TEXT: expected shape [batch, 1], got {list(text.shape)}")
    if text.shape[0] == 0:
        raise BadRequest("TEXT: empty batch (0 rows); send at least one row")
    rows = []
    for index, raw in enumerate(text[:, 0]):
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(raw) > max_bytes:
            raise BadRequest(f"TEXT row {index}: {len(raw)} bytes, the limit is {max_bytes}")
        try:
            rows.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise BadRequest(f"TEXT row {index}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return np.array(rows, dtype=object)


def encode(tokenizer: Tokenizer, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """INPUT_IDS and ATTENTION_MASK, int64 [batch, pad_to]; longer texts are truncated, as BERT pipelines do.

    One encode() per row, not encode_batch(): on the batches a server sees (a few rows), encode_batch's thread pool
    spent twice the CPU for the same result (220 against 115 µs for 4 comments, 43 against 29 µs for one).
    """
    encodings = [tokenizer.encode(row) for row in rows.tolist()]
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask

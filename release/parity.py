"""Parity: an artifact must give what its reference gives, on inputs that exercise every axis and the graph's input
repairs. Export holds a new artifact to its eager model; deploy holds a candidate, batched, to itself row by row."""

import logging

import numpy as np

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    pass


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, list | tuple) else [result]


def check_parity(name: str, reference, run_exported, samples: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Max abs difference between exported and reference outputs over every sample; raises above the tolerance.

    `reference` and `run_exported` map (ids, mask) numpy arrays to a numpy output or a list of them (every output is
    compared): at export the reference is the eager model, at deploy (release/gates.py) the same artifact run one
    unpadded row at a time.
    """
    worst = 0.0
    for ids, mask in samples:
        pairs = zip(as_list(run_exported(ids, mask)), as_list(reference(ids, mask)), strict=True)
        worst = max(worst, *(float(np.abs(exported - expected).max()) for exported, expected in pairs))
    log.info(
        "  parity %s: max abs diff %.2e over %d input shapes (limit %.0e)", name, worst, len(samples), PARITY_TOLERANCE
    )
    if not worst <= PARITY_TOLERANCE:  # also catches NaN
        raise ParityError(f"{name}: exported output differs from eager by {worst:.3e} > {PARITY_TOLERANCE}")
    return worst


def parity_samples(ids: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real rows at several batch sizes and sequence lengths, so dynamic axes are exercised, not just traced, and
    rows a client got wrong (ids outside the vocabulary, a mask that is not 0/1), which the graph must repair alike."""
    longest = int(mask.sum(1).max())  # cutting the padding here keeps every real token
    bad_ids, bad_mask = ids[:4].copy(), mask[:4].copy()
    bad_ids[0, 0], bad_ids[1, 1], bad_mask[2, 0] = -1, 10**9, 2
    nothing_real = np.full_like(ids[:2], -1)  # not one token left to compute once the graph masks them out
    # Short rows beside rows of eight comments each: every length group of export/packing.py in one batch.
    real = [ids[i, : int(mask[i].sum())] for i in range(8)]
    rows = real[:6] + [np.tile(row, 8) for row in real[:2]]
    width = max(len(row) for row in rows)
    mixed = tuple(
        np.stack([np.pad(values, (0, width - len(values))) for values in columns])
        for columns in (rows, [np.ones_like(row) for row in rows])
    )
    return [
        mixed,
        (bad_ids, bad_mask),
        (nothing_real, mask[:2]),
        (ids[:8], mask[:8]),
        (ids[8:9], mask[8:9]),
        (ids[:33, :longest], mask[:33, :longest]),
        (ids[:64], mask[:64]),
    ]


def row_by_row(run):
    """`run` on each row alone and without its padding: what a batched run must reproduce for dynamic batching (a
    row's answer may not depend on the rows batched with it)."""

    def reference(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rows = []
        for row_ids, row_mask in zip(ids, mask, strict=True):
            length = max(int(row_mask.sum()), 1)
            rows.append(as_list(run(row_ids[None, :length], row_mask[None, :length]))[0][0])
        return np.stack(rows)

    return reference

"""Run a dynamic batch as one model call: group requests by shape, concatenate, compute once, split back.

Triton hands a Python-based backend every request of a dynamic batch in one execute() call; computing them one by
one would throw away what the batcher gathered.
"""

from collections.abc import Callable, Sequence

import numpy as np

from python_backend.errors import BadRequest

Arrays = Sequence[np.ndarray]


def shape_key(arrays: Arrays) -> tuple:
    """Requests can be concatenated when every input has the same dtype and the same non-batch dimensions."""
    return tuple((a.dtype.str, a.shape[1:]) for a in arrays)


def run_batched(
    requests: list[Arrays],
    parse: Callable[..., Arrays],
    compute: Callable[..., Arrays],
) -> list[Arrays | Exception]:
    """For each request's input arrays, its output arrays, or the exception that fails it.

    `parse` validates one request's inputs (raising BadRequest) and returns the arrays to batch; an invalid request
    fails alone, and a compute error fails only the requests batched with it.
    """
    results: list[Arrays | Exception | None] = [None] * len(requests)
    inputs: list[Arrays | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, arrays in enumerate(requests):
        try:
            inputs[i] = parse(*arrays)
        except BadRequest as error:
            results[i] = error
            continue
        groups.setdefault(shape_key(inputs[i]), []).append(i)

    for members in groups.values():
        columns = zip(*(inputs[i] for i in members), strict=True)
        batch = [np.concatenate(column) if len(members) > 1 else column[0] for column in columns]
        try:
            outputs = compute(*batch)
        except Exception as error:  # noqa: BLE001 - report any model failure to the caller, keep the instance alive
            for i in members:
                results[i] = error
            continue
        cuts = np.cumsum([inputs[i][0].shape[0] for i in members])[:-1]
        pieces = [np.split(output, cuts) for output in outputs]
        for position, i in enumerate(members):
            results[i] = [piece[position] for piece in pieces]
    return results

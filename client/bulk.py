"""Bulk scoring: read comments from CSV or JSON lines, classify them in pipelined batches, write JSON lines in order.

Each output line is {"row": n, "text": ..., "label": ..., "probabilities": {...}, "members": {...}}, with n counting
input rows from 0. Batches are written in input order as they complete and flushed, so an interrupted run leaves a
prefix of the result; `resume` continues after it. Failed calls are retried by the client, so a server restart
mid-run loses and duplicates nothing.
"""

import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from client.feedback import FeedbackClient


class InputFileError(ValueError):
    """The input file cannot be read as asked (missing, unknown format, no such column)."""


def read_texts(path: Path, column: str) -> Iterator[str]:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as file:
        if path.suffix == ".csv":
            rows: Iterable[dict] = csv.DictReader(file)
        elif path.suffix in (".jsonl", ".ndjson"):
            rows = (json.loads(line) for line in file if line.strip())
        else:
            raise InputFileError(f"{path}: expected a .csv or .jsonl file")
        for number, row in enumerate(rows):
            if column not in row:
                raise InputFileError(f"{path}: row {number} has no column {column!r} (has: {', '.join(row)})")
            yield str(row[column])


def count_rows(path: Path) -> int:
    with path.open("rb") as file:
        lines = sum(1 for line in file if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines  # the CSV header


def batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def score_file(
    client: FeedbackClient, source: Path, column: str, target: Path, batch_size: int = 64, resume: bool = False
) -> int:
    """Score every row of source into target; returns the number of rows written by this run."""
    from tqdm import tqdm  # here, so that the rest of the CLI runs where only tritonclient and numpy are installed

    next(read_texts(source, column), None)  # a missing file or column fails here, before target is touched
    done = count_rows(target) if resume and target.exists() else 0
    texts = itertools.islice(read_texts(source, column), done, None)
    written = 0
    with (
        target.open("a" if done else "w", encoding="utf-8") as out,
        tqdm(total=count_rows(source), initial=done, unit="row", disable=None) as progress,
    ):
        # tee keeps each batch until its predictions come back (classify_stream has up to in_flight ahead).
        to_send, to_write = itertools.tee(batched(texts, batch_size))
        for batch, predictions in zip(to_write, client.classify_stream(to_send), strict=True):
            for offset, (text, prediction) in enumerate(zip(batch, predictions, strict=True)):
                line = {"row": done + written + offset, "text": text, **prediction.as_dict()}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            written += len(batch)
            progress.update(len(batch))
    return written

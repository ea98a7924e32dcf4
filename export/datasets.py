"""The labelled text that export trains on: the built-in synthetic corpus, or the user's own CSV / JSONL file.

The label set comes from the data: its names (sorted) are what the fuse step's config, the client and the CLI serve.
"""

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import corpus

MIN_ROWS_PER_CLASS = 5  # fewer leaves a class absent from the validation split that fits the stacking combiner


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int64 indices into Dataset.class_names


@dataclass(frozen=True)
class Dataset:
    class_names: list[str]
    train: Split
    validation: Split  # fits the stacking combiner
    held_out: Split  # reported only

    def describe(self) -> str:
        sizes = f"{len(self.train.texts)} train / {len(self.validation.texts)} validation / {len(self.held_out.texts)}"
        return f"{sizes} held-out rows, {len(self.class_names)} classes: {', '.join(self.class_names)}"


def _split(texts: list[str], labels: list[str], class_names: list[str]) -> Dataset:
    """70% train, 10% validation, 20% held out, in the given order."""
    index = np.array([class_names.index(label) for label in labels], dtype=np.int64)
    a, b = int(len(texts) * 0.7), int(len(texts) * 0.8)
    parts = [Split(texts[i:j], index[i:j]) for i, j in ((0, a), (a, b), (b, len(texts)))]
    return Dataset(class_names, *parts)


def synthetic(seed: int = 13) -> Dataset:
    """The built-in demo data: generated customer feedback over six topics (export/corpus.py)."""
    comments = corpus.generate(seed=seed)  # shuffled by construction
    return _split([c.text for c in comments], [c.topic for c in comments], list(corpus.TOPICS))


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """(text, label) rows of a CSV (header row) or JSONL file (one object per line), chosen by the file's suffix."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as file:
            records = list(csv.DictReader(file))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as file:
            records = [json.loads(line) for line in file if line.strip()]
    else:
        raise ValueError(f"{path}: expected a .csv or .jsonl file")
    rows = []
    for number, record in enumerate(records, start=1):
        missing = [column for column in (text_column, label_column) if column not in record]
        if missing:
            raise ValueError(f"{path} row {number}: no column {', '.join(map(repr, missing))} (has {sorted(record)})")
        text, label = str(record[text_column] or "").strip(), str(record[label_column] or "").strip()
        if not text or not label:
            raise ValueError(f"{path} row {number}: empty {'text' if not text else 'label'}")
        rows.append((text, label))
    return rows


def from_file(path: Path, text_column: str = "text", label_column: str = "label", seed: int = 13) -> Dataset:
    rows = read_rows(path, text_column, label_column)
    class_names = sorted({label for _, label in rows})
    counts = {name: sum(label == name for _, label in rows) for name in class_names}
    if len(class_names) < 2:
        raise ValueError(f"{path}: {len(class_names)} distinct label(s); a classifier needs at least 2")
    scarce = {name: count for name, count in counts.items() if count < MIN_ROWS_PER_CLASS}
    if scarce:
        raise ValueError(f"{path}: each label needs at least {MIN_ROWS_PER_CLASS} rows; too few for {scarce}")
    if any("," in name for name in class_names):
        raise ValueError(f"{path}: label names may not contain ',' (the served configs list them comma-separated)")
    random.Random(seed).shuffle(rows)
    return _split([text for text, _ in rows], [label for _, label in rows], class_names)

"""What every system is asked: real comments from the shipped corpus, tokenized by the repository's own tokenizer.

Random ids would not do: the members flag ids outside the vocabulary and `fuse` refuses them, and real padding
patterns are what the members see in production.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import datasets
from python_backend.layout import served_tokenizer
from python_backend.text import encode

COMMENTS = 64  # distinct requests perf_analyzer cycles through


@dataclass(frozen=True)
class Workload:
    texts: list[str]
    input_ids: np.ndarray  # int64 [COMMENTS, seq]
    attention_mask: np.ndarray
    ids_file: Path  # perf_analyzer --input-data for `feedback` (one batch-1 request per entry)
    text_file: Path  # the same comments for `feedback_text`

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]


def prepare(repository: Path, folder: Path) -> Workload:
    texts = datasets.synthetic().held_out.texts[:COMMENTS]
    tokenizer = served_tokenizer(repository)
    ids, mask = encode(tokenizer, np.array(texts, dtype=object))
    folder.mkdir(parents=True, exist_ok=True)
    seq = [ids.shape[1]]
    ids_entries = [
        {"INPUT_IDS": {"content": i.tolist(), "shape": seq}, "ATTENTION_MASK": {"content": m.tolist(), "shape": seq}}
        for i, m in zip(ids, mask, strict=True)
    ]
    text_entries = [{"TEXT": {"content": [text], "shape": [1]}} for text in texts]
    ids_file, text_file = folder / "input_ids.json", folder / "text.json"
    ids_file.write_text(json.dumps({"data": ids_entries}))
    text_file.write_text(json.dumps({"data": text_entries}))
    return Workload(texts, ids, mask, ids_file, text_file)

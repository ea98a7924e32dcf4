"""What every system is asked: the user's real task, a comment's text in and a label out, on a realistic length mix.

The mix is every comment written by hand for the evaluation (export/data: 180 short ones, median 14 tokens) plus the
long ones (140 to 190 tokens), repeated so that they are LONG_SHARE of the requests, shuffled once. Systems that
take token ids get the same comments tokenized by the repository's tokenizer at their true length, one request each:
there is no length every request is padded to.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import evaluate
from python_backend.layout import served_tokenizer
from python_backend.text import encode

LONG_SHARE = 0.10
SHORT_FILES = (evaluate.HANDWRITTEN, evaluate.DATA / "handwritten_holdout.csv")
LONG_FILE = evaluate.DATA / "long_comments.csv"
OLD_PAD_TO = 64  # what every comment was padded (and cut) to before: the padding share it would cost on this mix


@dataclass(frozen=True)
class Workload:
    texts: list[str]
    input_ids: list[np.ndarray]  # int64 [1, tokens] per comment
    text_file: Path  # perf_analyzer --input-data for `feedback_text` (one batch-1 request per entry)
    ids_file: Path  # the same comments' token ids for `feedback`, each at its own length

    @property
    def tokens(self) -> np.ndarray:
        return np.array([ids.shape[1] for ids in self.input_ids])

    def describe(self) -> dict:
        """The length mix, for the report."""
        tokens = self.tokens
        return {
            "comments": len(tokens),
            "long_share": float(np.mean(tokens > 64)),
            "tokens_median": float(np.median(tokens)),
            "tokens_mean": float(tokens.mean()),
            "tokens_p90": float(np.percentile(tokens, 90)),
            "tokens_max": int(tokens.max()),
            # Padded and cut to 64, as the tokenizer did before: the share of computed tokens that were padding
            "old_padding_share": float(1 - np.minimum(tokens, OLD_PAD_TO).sum() / (OLD_PAD_TO * len(tokens))),
            "old_cut_share": float(np.mean(tokens > OLD_PAD_TO)),
        }


def mix(seed: int = 27) -> list[str]:
    short = [text for path in SHORT_FILES for text in evaluate.read(path)[0]]
    long = evaluate.read(LONG_FILE)[0]
    wanted = round(len(short) * LONG_SHARE / (1 - LONG_SHARE))
    texts = short + [long[i % len(long)] for i in range(wanted)]
    random.Random(seed).shuffle(texts)
    return texts


def prepare(repository: Path, folder: Path) -> Workload:
    texts = mix()
    tokenizer = served_tokenizer(repository)
    rows = [encode(tokenizer, np.array([text], dtype=object))[0] for text in texts]
    folder.mkdir(parents=True, exist_ok=True)
    ids_entries = [
        {
            "INPUT_IDS": {"content": ids[0].tolist(), "shape": [ids.shape[1]]},
            "ATTENTION_MASK": {"content": [1] * ids.shape[1], "shape": [ids.shape[1]]},
        }
        for ids in rows
    ]
    text_entries = [{"TEXT": {"content": [text], "shape": [1]}} for text in texts]
    ids_file, text_file = folder / "input_ids.json", folder / "text.json"
    ids_file.write_text(json.dumps({"data": ids_entries}))
    text_file.write_text(json.dumps({"data": text_entries}))
    return Workload(texts, rows, text_file, ids_file)

"""canary.json: a few comments, their token ids and the labels the exported ensemble gives them, for the readiness
probe (server/probe.py), which fails when a served answer differs."""

import json
from pathlib import Path

import numpy as np

from python_backend.inprocess import InProcessEnsemble
from server.probe import CANARY_FILE

ROWS = 4  # comments of different classes: a model that mixes up classes fails, and the probe stays cheap
CANDIDATES = 300  # held-out comments to choose from: enough for every class, quick even for the minilm profile


def write(repo: Path, texts: list[str], labels: np.ndarray) -> list[str]:
    """canary.json for the ensemble in `repo` (export's staging folder, laid out as a repository): from labelled
    comments, for each class in turn (up to ROWS), the one the ensemble gets right with the most confidence, so a
    correct server never misses it by rounding. Returns the chosen labels."""
    ensemble = InProcessEnsemble(repo)
    probs = ensemble.classify(texts)["PROBS"]
    chosen = []
    for label in range(probs.shape[1]):
        right = np.flatnonzero((labels == label) & (probs.argmax(1) == label))
        if len(right):
            chosen.append(int(right[probs[right, label].argmax()]))
        if len(chosen) == ROWS:
            break
    if not chosen:
        raise ValueError("the ensemble gets none of the held-out comments right: no canary can be made")
    rows = [texts[index] for index in chosen]
    ids, mask, _ = ensemble.tokenize(rows)  # each comment fits one window
    names = [ensemble.fuse.class_names[int(probs[index].argmax())] for index in chosen]
    canary = {"texts": rows, "input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": names}
    (repo / CANARY_FILE).write_text(json.dumps(canary) + "\n")
    return names

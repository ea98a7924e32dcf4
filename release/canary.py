"""The readiness probe's canaries (server/probe.py): held-out comments, their token ids and the labels the exported
ensemble gives them. canary.json is the default ensemble's, written by export; `canary__<tenant>.json` a tenant's,
written by the tenant's deploy. The probe fails when a served label differs.

Two rows per class: the comment the ensemble gets right with the most confidence (a model that mixes up classes
fails), and the one it gets right by the smallest margin (a degraded model fails: halving a member's weights flips
these rows and none of the confident ones).
"""

import json
from pathlib import Path

import numpy as np

from conventions import CANARY_FILE, tenant_canary_file
from python_backend.inprocess import InProcessEnsemble
from release import staging

CANDIDATES = 300  # held-out comments to choose from: enough for every class, quick even for the accurate profile
# A borderline row still wins by this much: 2,000 times the 1e-5 by which a served answer may differ from the
# in-process one, so a correct server never misses it.
MIN_MARGIN = 0.02


def chosen_rows(probs: np.ndarray, labels: np.ndarray) -> list[int]:
    """Per class, the most confident right answer, then per class the right answer of the smallest margin (top
    probability minus the runner-up) that is at least MIN_MARGIN."""
    ranked = np.sort(probs, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    confident, borderline = [], []
    for label in range(probs.shape[1]):
        right = np.flatnonzero((labels == label) & (probs.argmax(1) == label))
        if not len(right):
            continue
        confident.append(int(right[probs[right, label].argmax()]))
        safe = right[margin[right] >= MIN_MARGIN]
        if len(safe):
            borderline.append(int(safe[margin[safe].argmin()]))
    return confident + [row for row in borderline if row not in confident]


def write(repo: Path, tenant: str | None = None, members: dict[str, str] | None = None) -> list[str]:
    """The canary of the ensemble in `repo` (a tenant's: with `members`, each member and the model that stands in
    for it), chosen from the repository's held-out comments; returns the chosen rows' labels."""
    rows = staging.read_held_out(repo)[:CANDIDATES]
    ensemble = InProcessEnsemble(repo, members=members)
    texts = [text for text, _ in rows]
    labels = np.array([ensemble.fuse.class_names.index(label) for _, label in rows])
    answers = ensemble.classify(texts)
    probs = answers["PROBS"]
    one_window = answers["WINDOWS"][:, 0] == 1  # a canary row is one comment: the probe checks a label per row
    chosen = chosen_rows(probs, np.where(one_window, labels, -1))
    if not chosen:
        raise ValueError("the ensemble gets none of the held-out comments right: no canary can be made")
    ids, mask, _ = ensemble.tokenize([texts[index] for index in chosen])
    names = [ensemble.fuse.class_names[int(probs[index].argmax())] for index in chosen]
    canary = {
        "texts": [texts[index] for index in chosen],
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "labels": names,
    }
    file = repo / (tenant_canary_file(tenant) if tenant else CANARY_FILE)
    with staging.staging(repo) as stage:
        staging.replace_file(stage, file, json.dumps(canary) + "\n")
    return names

"""Accuracy on comments no generator wrote: `python -m export.evaluate [--repository DIR] [--file CSV]`.

export/data/handwritten_eval.csv holds 60 comments written by hand in plain customer language, 10 per class, varied in
length and tone. It is never used for training or for choosing anything in training; it only measures. The export
report prints it beside the synthetic held-out figure.
"""

import argparse
from pathlib import Path

import numpy as np

from export import datasets
from python_backend.inprocess import InProcessEnsemble
from server.launch import REPOSITORY

HANDWRITTEN = Path(__file__).parent / "data" / "handwritten_eval.csv"


def read(path: Path) -> tuple[list[str], list[str]]:
    rows = datasets.read_rows(path, "text", "label")
    return [text for text, _ in rows], [label for _, label in rows]


def covers(class_names: list[str], path: Path = HANDWRITTEN) -> bool:
    """Whether a served label set has every label of the evaluation file (the built-in six topics do)."""
    return set(read(path)[1]) <= set(class_names)


def accuracies(repo: Path, path: Path = HANDWRITTEN) -> dict[str, float]:
    """Each member's and the served ensemble's accuracy, computed as the server computes them (same files, code)."""
    texts, labels = read(path)
    ensemble = InProcessEnsemble(repo)
    names = ensemble.fuse.class_names
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in the served label set {names}")
    truth = np.array([names.index(label) for label in labels])
    outputs = ensemble.classify(texts)
    scores = {
        member: float((outputs["MEMBER_PROBS"][:, i].argmax(1) == truth).mean())
        for i, member in enumerate(ensemble.fuse.member_names)
    }
    scores["ensemble"] = float((outputs["PROBS"].argmax(1) == truth).mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__)
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--file", type=Path, default=HANDWRITTEN)
    args = parser.parse_args()
    texts, _ = read(args.file)
    print(f"accuracy on {len(texts)} hand-written comments ({args.file.name}):")
    for name, score in accuracies(args.repository, args.file).items():
        print(f"  {name:<24} {score:.4f}")


if __name__ == "__main__":
    main()

"""Accuracy on comments no generator wrote: `python -m export.evaluate [--repository DIR] [--file CSV ...]`.

Three files of comments written by hand in plain customer language, never used for training:
- handwritten_eval.csv: 60 comments (10 per class), the ones profiles and options were chosen on;
- handwritten_holdout.csv: 120 more (20 per class), never looked at while choosing, only reported;
- long_comments.csv: 12 of 140 to 190 tokens (2 per class), some naming their topic only late: the windows' test.
Export prints them beside the synthetic held-out figure, with a 95% interval: 60 rows leave about +-0.1.
"""

import argparse
import math
from pathlib import Path

import numpy as np

from conventions import REPOSITORY
from export import datasets
from python_backend.inprocess import InProcessEnsemble

DATA = Path(__file__).parent / "data"
HANDWRITTEN = DATA / "handwritten_eval.csv"
FILES = (HANDWRITTEN, DATA / "handwritten_holdout.csv", DATA / "long_comments.csv")


def read(path: Path) -> tuple[list[str], list[str]]:
    rows = datasets.read_rows(path, "text", "label")
    return [text for text, _ in rows], [label for _, label in rows]


def covers(class_names: list[str], path: Path = HANDWRITTEN) -> bool:
    """Whether a served label set has every label of the evaluation file (the built-in six topics do)."""
    return set(read(path)[1]) <= set(class_names)


def interval(right: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval for an accuracy of right / total."""
    p = right / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


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


def report(repo: Path, paths=FILES) -> list[str]:
    """A line per file: its rows, each member's and the ensemble's accuracy, the ensemble's 95% interval."""
    lines = []
    for path in paths:
        rows = len(read(path)[0])
        scores = accuracies(repo, path)
        low, high = interval(round(scores["ensemble"] * rows), rows)
        members = ", ".join(f"{name} {score:.3f}" for name, score in scores.items() if name != "ensemble")
        lines.append(
            f"  {path.name:<26} {rows:>4} rows: ensemble {scores['ensemble']:.3f} (95% {low:.2f}-{high:.2f}); {members}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__)
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--file", type=Path, action="append", help="a CSV with text and label columns (default: all)")
    args = parser.parse_args()
    print("accuracy as served, on comments written by hand:")
    print("\n".join(report(args.repository, args.file or FILES)))


if __name__ == "__main__":
    main()

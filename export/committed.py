"""The models committed to git (ensembles and Python steps) that export stages beside the members it builds
(release/staging.py makes them live)."""

import shutil
from pathlib import Path

from conventions import REPOSITORY

MODELS = (
    "feedback",
    "feedback_text",
    "feedback_tenant",
    "feedback_routed",
    "tokenizer",
    "fuse",
)
# What export writes into those folders (git ignores them): a copy must not carry another run's.
GENERATED = {"tokenizer/1/tokenizer.json", "fuse/1/stacking.npz", "fuse/config.pbtxt"}


def stage(repo: Path, into: Path) -> None:
    """The committed models' folders, staged for `repo`: links kept for the committed repository itself (they
    resolve the same from beside it), resolved for any other. Export then adds its generated files."""
    keep_links = repo.resolve() == REPOSITORY.resolve()
    for name in MODELS:
        shutil.copytree(
            REPOSITORY / name,
            into / name,
            symlinks=keep_links,
            ignore=lambda folder, names: [n for n in names if n == "__pycache__" or _generated(Path(folder) / n)],
        )


def _generated(path: Path) -> bool:
    return path.relative_to(REPOSITORY).as_posix() in GENERATED

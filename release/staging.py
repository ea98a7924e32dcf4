"""Put models into a live Triton repository so that the server never sees a half-written or unchecked model.

Everything is built in a staging folder beside the repository (same file system, outside Triton's view) and moved in
only after its checks passed: a whole model folder in one rename (exchanged with the live one, so the model's name
never points at a missing or half-written folder), a file with replace(). Export and deploy both go live this way.
"""

import csv
import ctypes
import fcntl
import filecmp
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from python_backend.layout import latest_version, next_version, versions

# The rows export held out from training, with their label names: deploys score candidates on them. Triton ignores
# files at the repository's root.
HELD_OUT = "held_out.csv"


@contextmanager
def locked(repo: Path):
    """One writer at a time per repository (export, deploy, rollback): two would race for the same folders."""
    descriptor = os.open(repo, os.O_RDONLY)  # a lock on the folder itself: no lock file for Triton to see
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextmanager
def staging(repository: Path):
    """A temporary folder beside the repository, removed whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=f".staging-{repository.name}-", dir=repository.resolve().parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>


def exchange(a: Path, b: Path) -> None:
    """Swap what two paths name in one step: Linux renameat2(RENAME_EXCHANGE) (ext4, xfs, tmpfs, overlayfs)."""
    if _LIBC.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot exchange {a} and {b}: {os.strerror(error)}")


def install_model(staged: Path, destination: Path) -> None:
    """Make `staged` (a whole model folder, in a staging folder) live as `destination` in one step. A poll sees the
    old folder or the new one, never none; the old one is left at `staged`, removed with the staging folder."""
    if destination.exists():
        exchange(staged, destination)
    else:
        staged.rename(destination)


def same_tree(a: Path, b: Path) -> bool:
    """Whether two model folders hold the same files with the same bytes (a swap would only make Triton reload)."""
    comparison = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in comparison.common_dirs)


def in_repository(repo: Path, model: str) -> bool:
    """Whether the repository has the model whole: its config and a version (a fresh clone has fuse/1/model.py and no
    config: export writes it)."""
    return (repo / model / "config.pbtxt").is_file() and bool(versions(repo / model))


def changed(stage: Path, repo: Path, models: list[str]) -> list[str]:
    """The staged models (config.pbtxt and version 1) that the repository does not serve yet: a model with the same
    config and, as its latest version, the same files is left alone, as replacing it would only make Triton reload
    it (and the ensembles using it)."""
    return [
        model
        for model in models
        if not (
            in_repository(repo, model)
            and filecmp.cmp(stage / model / "config.pbtxt", repo / model / "config.pbtxt", shallow=False)
            and same_tree(stage / model / "1", latest_version(repo / model))
        )
    ]


def publish(stage: Path, repo: Path, models: list[str]) -> None:
    """Make staged model folders live, back to back, each in one step."""
    for model in models:
        install_model(stage / model, repo / model)


def replace_file(stage: Path, path: Path, text: str) -> None:
    """Give `path` the contents `text` in one step: written in the staging folder (the same file system), then renamed
    over it, so that readers (Triton's poll, the router reading tenants.json) see the old file or the new one."""
    staged = stage / f"{path.parent.name}.{path.name}"
    staged.write_text(text)
    staged.replace(path)


def install_version(staged_version: Path, config_text: str, model_dir: Path) -> int:
    """Add `staged_version` as the next version of `model_dir`; the config goes in first, atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    replace_file(staged_version.parent, model_dir / "config.pbtxt", config_text)
    staged_version.rename(model_dir / str(version))
    return version


def write_held_out(folder: Path, texts: list[str], labels: list[str]) -> None:
    with open(folder / HELD_OUT, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))


def read_held_out(repo: Path) -> list[tuple[str, str]]:
    """(text, label) rows of the repository's held-out file, as write_held_out wrote them."""
    with open(repo / HELD_OUT, newline="", encoding="utf-8") as file:
        return [(row["text"], row["label"]) for row in csv.DictReader(file)]

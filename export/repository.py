"""Write models into a Triton repository so that the server never sees a half-written or unchecked model.

Everything is built in a staging folder beside the repository (same file system, outside Triton's view) and moved in
with rename() only after its parity check passed.
"""

import csv
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "model_repository"
COMMITTED_MODELS = ("feedback", "feedback_text", "feedback_routed", "tokenizer", "fuse")
# What export writes into those folders (git ignores them): a copy must not carry another run's.
GENERATED = {"tokenizer/1/tokenizer.json", "fuse/1/stacking.npz", "fuse/config.pbtxt"}
# The rows export held out from training, with their label names: deploys score candidates on them. Triton ignores
# files at the repository's root.
HELD_OUT = "held_out.csv"


def prepare(repository: Path) -> None:
    """A repository other than the committed one gets the committed models' files (model.py links resolved)."""
    repository.mkdir(parents=True, exist_ok=True)
    if repository.resolve() == COMMITTED.resolve():
        return
    for name in COMMITTED_MODELS:
        for source in (COMMITTED / name).rglob("*"):
            relative = source.relative_to(COMMITTED)
            if source.is_file() and relative.as_posix() not in GENERATED:
                (repository / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, repository / relative)


@contextmanager
def staging(repository: Path):
    """A temporary folder beside the repository, removed whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=f".staging-{repository.name}-", dir=repository.resolve().parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def install_model(staged: Path, destination: Path, trash: Path) -> None:
    """Replace `destination` (a whole model folder) with `staged`; the old one goes to `trash`, outside the repo."""
    if destination.exists():
        destination.rename(trash / f"retired-{destination.name}")
    staged.rename(destination)


def install_version(staged_version: Path, config_text: str, model_dir: Path) -> int:
    """Add `staged_version` as the next version of `model_dir`; the config goes in first, atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir)
    config = model_dir / "config.pbtxt"
    staged_config = staged_version.parent / "config.pbtxt"
    staged_config.write_text(config_text)
    staged_config.replace(config)
    staged_version.rename(model_dir / str(version))
    return version


def write_held_out(repository: Path, texts: list[str], labels: list[str]) -> None:
    staged = repository / f".{HELD_OUT}.partial"
    with open(staged, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    staged.replace(repository / HELD_OUT)

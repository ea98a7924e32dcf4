"""A Triton model repository's layout, read one way: a model's version folders, the latest, the next number, its
config, and the tokenizer every ensemble serves."""

from pathlib import Path

from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2


def versions(model_dir: Path) -> list[int]:
    """The model's version numbers, ascending; [] when the folder does not exist."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version(model_dir: Path) -> Path:
    """The highest numbered version folder."""
    present = versions(model_dir)
    if not present:
        raise FileNotFoundError(f"{model_dir}: no numbered version folder")
    return model_dir / str(present[-1])


def next_version(model_dir: Path) -> int:
    return max(versions(model_dir), default=0) + 1


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return parse_config((model_dir / "config.pbtxt").read_text())


def served_tokenizer(repository: Path) -> Tokenizer:
    """The `tokenizer` model's latest tokenizer.json: the ids every member of the ensembles is fed."""
    return Tokenizer.from_file(str(latest_version(repository / "tokenizer") / "tokenizer.json"))

"""Export a user's local Hugging Face sequence-classification checkpoint as a member-compatible ONNX model."""

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from export import corpus, repository
from export.artifacts import export_onnx
from export.configs import MemberSpec, member_config
from export.members import MAX_POSITIONS, CheckedInputs
from export.train import accuracy, predict
from python_backend.text import encode


class Probabilities(nn.Module):
    """(input_ids, attention_mask) -> class probabilities, the interface every member has."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.softmax(-1)


def load(checkpoint: Path) -> tuple[nn.Module, int, int]:
    """The wrapped model, its vocabulary size and longest sequence; refuses a checkpoint with other classes."""
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: only this command needs it

    config = AutoConfig.from_pretrained(checkpoint, local_files_only=True)
    if config.num_labels != len(corpus.TOPICS):
        raise ValueError(
            f"{checkpoint}: {config.num_labels} labels, the ensemble has {len(corpus.TOPICS)}: "
            f"{', '.join(corpus.TOPICS)}"
        )
    names = [config.id2label[i] for i in range(config.num_labels)]
    if names != [f"LABEL_{i}" for i in range(config.num_labels)] and names != list(corpus.TOPICS):
        raise ValueError(f"{checkpoint}: labels {names} are not the ensemble's classes in order {list(corpus.TOPICS)}")
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, local_files_only=True, attn_implementation="eager"
    )
    return Probabilities(model).eval(), config.vocab_size, min(config.max_position_embeddings, MAX_POSITIONS)


def export_pretrained(checkpoint: Path, name: str, repo: Path) -> int:
    """Write the checkpoint as the next version of model `name` (version 1 of a new model); returns the version."""
    model, vocab_size, max_seq_len = load(checkpoint)
    rng = np.random.default_rng(0)
    seq = min(32, max_seq_len)
    ids = rng.integers(0, vocab_size, size=(64, seq), dtype=np.int64)
    mask = (np.arange(seq) < rng.integers(1, seq + 1, size=(64, 1))).astype(np.int64)
    samples = [(ids[:8], mask[:8]), (ids[8:9], mask[8:9]), (ids[:33, : seq // 2], mask[:33, : seq // 2]), (ids, mask)]

    tokenizer_file = repo / "tokenizer" / "1" / "tokenizer.json"
    if tokenizer_file.exists():
        tok = Tokenizer.from_file(str(tokenizer_file))
        if tok.get_vocab_size() <= vocab_size:
            held_out = corpus.split(corpus.generate())[2]
            test_ids, test_mask = encode(tok, np.array([c.text for c in held_out], dtype=object))
            labels = np.array([c.label for c in held_out])
            print(
                f"held-out accuracy of {checkpoint.name}: {accuracy(predict(model, test_ids, test_mask), labels):.4f}"
            )

    repo.mkdir(parents=True, exist_ok=True)
    with repository.staging(repo) as stage:
        version_dir = stage / "version"
        version_dir.mkdir()
        export_onnx(CheckedInputs(model, vocab_size, max_seq_len), version_dir / "model.onnx", samples)
        spec = MemberSpec(
            name,
            "onnxruntime_onnx",
            ("INPUT_IDS", "ATTENTION_MASK"),
            ("PROBS", "INPUT_ERRORS"),
            len(corpus.TOPICS),
            vocab_size,
            max_seq_len,
            warmup_seq=seq,
        )
        version = repository.install_version(version_dir, member_config(spec), repo / name)
    print(f"wrote {name} version {version} into {repo}")
    return version

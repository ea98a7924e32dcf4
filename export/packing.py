"""Token-wise layers on the real tokens only: the members' own way of not paying for padding.

A batch reaches a member as [batch, width] ids and mask, padded to its longest row (export.members.RaggedInputs
builds that from Triton's ragged batch). The embeddings, projections and feed-forward layers, nearly all of a
transformer's work, act on each token alone, so they run on the packed [tokens, hidden] rows of the real tokens:
a batch of 16 short comments and one 256-token window costs what its tokens cost. Only attention needs a row's
tokens side by side; it gathers them into [batch, longest real row, ...] and back.

Every op here exports to ONNX and traces to TorchScript with dynamic sizes (nonzero, gather, arange of a tensor).
"""

import math

import torch


class Packing:
    """Where each real token (mask 1) of a padded [batch, width] batch sits, in the order of torch.nonzero."""

    def __init__(self, mask: torch.Tensor):
        self.rows, self.columns = mask.nonzero(as_tuple=True)  # row-major: a row's tokens are contiguous
        self.counts = mask.sum(1)  # real tokens per row
        starts = self.counts.cumsum(0) - self.counts
        self.longest = self.counts.max().clamp(min=1)
        slots = torch.arange(self.longest, device=mask.device)
        self.real = slots[None, :] < self.counts[:, None]  # [batch, longest]: which slots hold a token
        tokens = self.rows.shape[0]
        # Slot -> packed token (an empty slot reads the zero row appended at index `tokens`), and back.
        self.to_slots = torch.where(self.real, starts[:, None] + slots[None, :], tokens)
        position = torch.ones_like(self.rows).cumsum(0) - 1
        self.to_tokens = self.rows * self.longest + (position - starts[self.rows])

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[tokens, ...] -> [batch, longest, ...], zeros in the empty slots."""
        zero = packed.new_zeros((1, *packed.shape[1:]))  # a batch with no real token at all still runs
        return torch.cat([packed, zero])[self.to_slots]

    def unpad(self, slotted: torch.Tensor) -> torch.Tensor:
        """[batch, longest, ...] -> [tokens, ...]."""
        return slotted.flatten(0, 1)[self.to_tokens]

    def mean(self, packed: torch.Tensor) -> torch.Tensor:
        """Each row's mean over its real tokens, [batch, hidden]; 0 for a row without any."""
        total = (self.pad(packed) * self.real[..., None].to(packed.dtype)).sum(1)
        return total / self.counts[:, None].clamp(min=1).to(packed.dtype)

    def max(self, packed: torch.Tensor) -> torch.Tensor:
        """Each row's max over its real tokens of non-negative features, [batch, features]; 0 for an empty row."""
        return self.pad(packed).amax(1)


def attention(packing: Packing, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, size: int):
    """Scaled dot-product attention within each row: packed [tokens, heads * size] q, k, v -> the same shape."""
    q, k, v = (packing.pad(t.reshape(-1, heads, size)).transpose(1, 2) for t in (q, k, v))  # [batch, heads, slot, size]
    key_bias = (~packing.real).to(q.dtype)[:, None, None, :] * -1e9
    scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(size)) + key_bias
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(q.shape[0], -1, heads * size)
    return packing.unpad(context)

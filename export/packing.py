"""Token-wise layers on the real tokens only: the members' own way of not paying for padding.

A batch reaches a member as [batch, width] ids and mask, padded to its longest row (export.members.RaggedInputs
builds that from Triton's ragged batch). The embeddings, projections and feed-forward layers, nearly all of a
transformer's work, act on each token alone, so they run on the packed [tokens, hidden] rows of the real tokens:
a batch of 16 short comments and one 256-token window costs what its tokens cost.

Attention needs a row's tokens side by side, padded to a common length. Padding every row to the batch's longest
would make 15 short comments attend over 256 slots each when one window is among them (measured: a batch of 32
comments of the bench's mix cost more per comment than a batch of 8). So rows are grouped by length (GROUP_BOUNDS)
and each group is padded to its own longest row.

Every op here exports to ONNX and traces to TorchScript with dynamic sizes (nonzero, gather, arange of a tensor); a
group with no row in a batch is an empty tensor, which every op passes through.
"""

import math

import torch

GROUP_BOUNDS = (32, 96)  # rows of up to 32 real tokens, up to 96, and longer: each group padded to its own longest


class Group:
    """The rows of one length group laid out as [rows, longest] slots of packed tokens."""

    def __init__(self, rows: torch.Tensor, counts: torch.Tensor, starts: torch.Tensor, tokens: int):
        self.rows = rows  # which rows of the batch, in order
        self.counts = counts[rows]
        longest = torch.cat([self.counts, self.counts.new_ones(1)]).max()  # at least 1, even with no row
        self.slots = torch.arange(longest, device=rows.device)[None, :]
        self.real = self.slots < self.counts[:, None]  # [rows, longest]: which slots hold a token
        self.to_slots = torch.where(self.real, starts[rows][:, None] + self.slots, tokens)  # empty slots: the zero row
        self.size = self.real.shape[0] * self.real.shape[1]


class Packing:
    """Where each real token (mask 1) of a padded [batch, width] batch sits, in the order of torch.nonzero, and the
    length groups attention and pooling work in."""

    def __init__(self, mask: torch.Tensor):
        self.rows, self.columns = mask.nonzero(as_tuple=True)  # row-major: a row's tokens are contiguous
        counts = mask.sum(1)  # real tokens per row
        starts = counts.cumsum(0) - counts
        tokens = self.rows.shape[0]
        position = torch.ones_like(self.rows).cumsum(0) - 1 - starts[self.rows]  # a token's place in its row
        self.groups = []
        # Where each row's result and each token's slot sit once the groups' results are laid end to end.
        self.to_rows, self.to_tokens = torch.zeros_like(counts), torch.zeros_like(self.rows)
        row_offset, slot_offset = counts.new_zeros(()), counts.new_zeros(())
        for low, high in zip((-1, *GROUP_BOUNDS), (*GROUP_BOUNDS, None), strict=True):
            member = (counts > low) & (counts <= high) if high is not None else counts > low
            group = Group(member.nonzero()[:, 0], counts, starts, tokens)
            place = member.to(counts.dtype).cumsum(0) - 1  # a member row's index within its group
            self.to_rows = torch.where(member, row_offset + place, self.to_rows)
            width = group.real.shape[1]
            at = slot_offset + place[self.rows] * width + position
            self.to_tokens = torch.where(member[self.rows], at, self.to_tokens)
            row_offset = row_offset + group.rows.shape[0]
            slot_offset = slot_offset + group.size
            self.groups.append(group)
        self.counts = counts

    def pad(self, packed: torch.Tensor, group: Group) -> torch.Tensor:
        """[tokens, ...] -> the group's [rows, longest, ...], zeros in the empty slots."""
        zero = packed.new_zeros((1, *packed.shape[1:]))  # a batch with no real token at all still runs
        return torch.cat([packed, zero])[group.to_slots]

    def per_token(self, slotted: list[torch.Tensor]) -> torch.Tensor:
        """Each group's [rows, longest, ...] -> [tokens, ...], in packed order."""
        return torch.cat([part.flatten(0, 1) for part in slotted])[self.to_tokens]

    def per_row(self, results: list[torch.Tensor]) -> torch.Tensor:
        """Each group's [rows, ...] -> [batch, ...], in the batch's row order."""
        return torch.cat(results)[self.to_rows]

    def mean(self, packed: torch.Tensor) -> torch.Tensor:
        """Each row's mean over its real tokens, [batch, hidden]; 0 for a row without any."""
        sums = [(self.pad(packed, g) * g.real[..., None].to(packed.dtype)).sum(1) for g in self.groups]
        return self.per_row(sums) / self.counts[:, None].clamp(min=1).to(packed.dtype)

    def max(self, packed: torch.Tensor) -> torch.Tensor:
        """Each row's max over its real tokens of non-negative features, [batch, features]; 0 for an empty row."""
        return self.per_row([self.pad(packed, g).amax(1) for g in self.groups])


def attention(packing: Packing, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, size: int):
    """Scaled dot-product attention within each row: packed [tokens, heads * size] q, k, v -> the same shape."""
    contexts = []
    for group in packing.groups:
        qg, kg, vg = (packing.pad(t.reshape(-1, heads, size), group).transpose(1, 2) for t in (q, k, v))
        key_bias = (~group.real).to(qg.dtype)[:, None, None, :] * -1e9  # [rows, 1, 1, slots]
        scores = qg @ kg.transpose(-1, -2) * (1.0 / math.sqrt(size)) + key_bias
        context = (scores.softmax(-1) @ vg).transpose(1, 2)  # [rows, slots, heads, size]
        # Explicit sizes, not -1: ONNX cannot infer a -1 beside a 0 (a group without rows).
        contexts.append(context.reshape(context.shape[0], context.shape[1], heads * size))
    return packing.per_token(contexts)

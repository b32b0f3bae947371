"""Shared layers for feature-aware models (FM, DeepFM)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class FieldBags(nn.Module):
    """One side's features as pooled per-field embeddings.

    Buffers `index`/`weight` (N, F, S) hold each entity's feature ids per field and slot
    (see recsys.data.features); a field's embedding is the weighted sum over its slots, so a
    multi-valued field (genres) is the mean of its values' vectors. Only real slots (weight
    > 0) are looked up, through EmbeddingBag: padding costs nothing in forward or backward.
    """

    def __init__(
        self,
        num_entities: int,
        num_fields: int,
        num_slots: int,
        num_features: int,
        dim: int,
        init_std: float,
    ) -> None:
        super().__init__()
        # Default layout: the entity's own ID as the only field (id = index + 1, 0 = unknown).
        index = torch.zeros(num_entities, num_fields, num_slots, dtype=torch.long)
        index[:, 0, 0] = torch.arange(1, num_entities + 1)
        weight = torch.zeros(num_entities, num_fields, num_slots)
        weight[:, :, 0] = 1.0
        self.register_buffer("index", index)  # (N, F, S)
        self.register_buffer("weight", weight)  # (N, F, S)
        # First feature id of each field: its shared "unknown" slot.
        self.register_buffer("field_offsets", torch.zeros(num_fields, dtype=torch.long))
        self.emb = nn.EmbeddingBag(num_features, dim, mode="sum")  # (num_features, k)
        self.bias = nn.EmbeddingBag(num_features, 1, mode="sum")  # first-order weights
        nn.init.normal_(self.emb.weight, std=init_std)
        nn.init.zeros_(self.bias.weight)

    def set_features(self, index: np.ndarray, weight: np.ndarray, offsets: list[int]) -> None:
        self.index.copy_(torch.as_tensor(index))
        self.weight.copy_(torch.as_tensor(weight))
        self.field_offsets.copy_(torch.as_tensor(offsets, dtype=torch.long))

    @property
    def num_fields(self) -> int:
        return self.index.shape[1]

    def lookup(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature ids and weights (B, F, S) of `rows`; row -1 is an entity the model has
        never seen: no ID vector, every feature field at its shared unknown slot."""
        unknown = rows < 0
        if not unknown.any():
            return self.index[rows], self.weight[rows]
        safe = rows.clamp(min=0)
        index, weight = self.index[safe].clone(), self.weight[safe].clone()
        index[unknown] = self.field_offsets[:, None].expand(-1, index.shape[2])
        weight[unknown] = 0.0
        weight[unknown, 1:, 0] = 1.0  # no ID vector (field 0): like a cold entity
        return index, weight

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) -> pooled field embeddings (B, F, k) and the first-order term (B,).

        A training batch repeats entities many times (negatives, popular items): each
        distinct one is encoded once and gathered back, which keeps backward cheap."""
        distinct, inverse = torch.unique(rows, return_inverse=True)
        if distinct.numel() < rows.numel():
            fields, linear = self._encode(distinct)
            return fields[inverse], linear[inverse]
        return self._encode(rows)

    def _encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index, weight = self.lookup(rows)
        real = weight > 0  # (B, F, S)
        flat, per_sample = index[real], weight[real]
        counts = real.sum(-1).flatten()  # slots per (entity, field) bag
        offsets = torch.cumsum(counts, 0) - counts
        fields = self.emb(flat, offsets, per_sample_weights=per_sample).view(*index.shape[:2], -1)
        linear = (
            self.bias(flat, offsets, per_sample_weights=per_sample).view(index.shape[0], -1).sum(1)
        )
        return fields, linear


def fm_pairwise(fields: torch.Tensor) -> torch.Tensor:
    """FM second-order term over fields in O(F k) (Rendle 2010, eq. 5):
    sum_{f<g} <e_f, e_g> = 0.5 * sum_k ((sum_f e_fk)^2 - sum_f e_fk^2). (B, F, k) -> (B,)."""
    return 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(-1)


class History(nn.Module):
    """Implicit feedback as one more field (SVD++, Koren KDD 2008): an entity's training
    partners (a user's items, or an item's users) pooled as sum_j y_j / sqrt(n).

    The partners are one sorted buffer of keys owner * num_partners + partner, so the pool
    of any owner is a slice found by binary search and a checkpoint holds it whole. At most
    `max_len` partners per owner are kept (a seeded sample): memory and the work per batch
    stay bounded on any data. While training, a pair leaves itself out of the pool, so the
    model learns from the evidence it has for a pair it has not seen, never from the mere
    presence of the pair it is asked about.
    """

    def __init__(
        self, num_owners: int, num_partners: int, dim: int, init_std: float, max_len: int
    ) -> None:
        super().__init__()
        self.num_owners, self.num_partners, self.max_len = num_owners, num_partners, max_len
        self.register_buffer("keys", torch.zeros(0, dtype=torch.long))  # (nnz,) sorted
        self.emb = nn.Embedding(num_partners, dim)  # y_j
        nn.init.normal_(self.emb.weight, std=init_std)

    def set_pairs(self, owner: torch.Tensor, partner: torch.Tensor) -> None:
        """The training pairs (duplicates count once); draws from torch's global generator
        when an owner has more than `max_len` partners."""
        keys = torch.unique(owner.long() * self.num_partners + partner.long())
        owners = keys // self.num_partners
        counts = torch.bincount(owners, minlength=self.num_owners)
        if keys.numel() and int(counts.max()) > self.max_len:
            # rank of each pair within its owner after a random shuffle; keep the first max_len
            order = torch.randperm(keys.numel())
            order = order[torch.argsort(owners[order], stable=True)]
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(keys.numel()) - starts[owners[order]]
            keys = torch.sort(keys[order[rank < self.max_len]]).values
        self.keys = keys.to(self.keys.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # the history's size is the training data's: take the stored buffer's shape
        stored = state_dict.get(prefix + "keys")
        if stored is not None:
            self.keys = torch.empty_like(stored, device=self.keys.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def pool(self, rows: torch.Tensor, partners: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) owner rows -> (B, k) pooled partner vectors; row -1 (an unknown entity) has
        none. With `partners` (B,), each row's own pair is left out of its pool."""
        distinct, inverse = torch.unique(rows, return_inverse=True)
        p = self.num_partners
        start = torch.searchsorted(self.keys, distinct * p)
        end = torch.searchsorted(self.keys, (distinct + 1) * p)
        start, end = torch.where(distinct < 0, 0, start), torch.where(distinct < 0, 0, end)
        lengths = end - start  # (D,)
        offsets = torch.cumsum(lengths, 0) - lengths
        flat = torch.arange(int(lengths.sum()), device=rows.device)
        flat = flat + torch.repeat_interleave(start - offsets, lengths)  # positions in keys
        sums = nn.functional.embedding_bag(
            self.keys[flat] % p, self.emb.weight, offsets, mode="sum"
        )[inverse]  # (B, k)
        count = lengths[inverse].float()  # (B,)
        if partners is not None and self.keys.numel():
            own = rows * p + partners
            at = torch.searchsorted(self.keys, own).clamp(max=self.keys.numel() - 1)
            member = ((self.keys[at] == own) & (rows >= 0) & (partners >= 0)).float()
            sums = sums - member[:, None] * self.emb(partners.clamp(min=0))
            count = count - member
        return sums / count.clamp(min=1).sqrt()[:, None]

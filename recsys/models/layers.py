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

    def fields(self, rows: torch.Tensor) -> torch.Tensor:
        return self.encode(rows)[0]


def fm_pairwise(fields: torch.Tensor) -> torch.Tensor:
    """FM second-order term over fields in O(F k) (Rendle 2010, eq. 5):
    sum_{f<g} <e_f, e_g> = 0.5 * sum_k ((sum_f e_fk)^2 - sum_f e_fk^2). (B, F, k) -> (B,)."""
    return 0.5 * (fields.sum(1).pow(2) - fields.pow(2).sum(1)).sum(-1)

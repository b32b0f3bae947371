"""iALS: matrix factorization for implicit feedback by alternating least squares (Hu, Koren &
Volinsky, ICDM 2008), each half-step solved by conjugate gradient (Takacs, Pilaszy & Tikk,
RecSys 2011), as implicit's AlternatingLeastSquares does.

Every (user, item) pair is a preference p = 1 (observed) or 0 (not) with confidence
c = alpha * w for observed pairs (w: the pair's confidence x recency weight, see
recsys.models.weighting; implicit's convention, so alpha = 1 on plain binary data weighs every
pair alike) and 1 for all others. Old interactions fade with recency: their c shrinks. With the item factors Y fixed, each user's
vector solves (Y'Y + Y'(C_u - I)Y + reg I) x_u = Y' C_u p_u; Y'Y is shared, so a solve costs
O(n_u d) per CG step. All users (then all items) at once in torch sparse ops: threads and
GPU apply, and memory stays at the factors plus a few values per interaction.
Full scoring: P[U] @ Q.T, one GEMM.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from recsys.models import weighting
from recsys.models.base import Feedback
from recsys.models.itemitem import PROFILE_DEFAULTS, PROFILE_SEARCH
from recsys.models.mf import MF


class IALS(MF):
    name: ClassVar[str] = "ials"
    trainable: ClassVar[bool] = False
    DEFAULTS: ClassVar[dict[str, Any]] = {
        **PROFILE_DEFAULTS,
        "dim": 128,
        "init_std": 0.01,
        "reg": 10.0,
        "alpha": 1.0,
        "iterations": 15,
        "cg_steps": 3,
    }
    SEARCH_SPACE: ClassVar[dict[str, tuple]] = {
        "dim": ("choice", [32, 64, 128, 256]),
        "reg": ("log", 1e-3, 100.0),
        "alpha": ("log", 0.1, 100.0),
        "confidence": ("choice", ["none", "log", "bm25"]),
        **PROFILE_SEARCH,
    }

    def __init__(self, num_users: int, num_items: int, **hparams: Any) -> None:
        super().__init__(num_users, num_items, **hparams)
        weighting.check_settings(self.name, self.hparams)

    def fit_direct(self, feedback: Feedback) -> None:
        hp = self.hparams
        weight = weighting.confidence(feedback, hp["confidence"]) * weighting.recency(
            feedback, float(hp["half_life"]), hp["recency"]
        )
        extra = float(hp["alpha"]) * weight - 1.0  # c - 1 on observed pairs (>= -1: PSD)
        device = self.user_emb.weight.device
        users, items = feedback.user_idx.to(device), feedback.item_idx.to(device)
        extra = extra.to(device)
        by_user = _Entries(users, items, extra, self.num_users)
        by_item = _Entries(items, users, extra, self.num_items)
        reg, steps = float(hp["reg"]), int(hp["cg_steps"])
        with torch.no_grad():
            x, y = self.user_emb.weight, self.item_emb.weight
            for _ in range(int(hp["iterations"])):
                _solve(x, y, by_user, reg, steps)
                _solve(y, x, by_item, reg, steps)


class _Entries:
    """Observed pairs grouped by one side, as a CSR pattern: (rows, columns) with c - 1."""

    def __init__(
        self, rows: torch.Tensor, cols: torch.Tensor, extra: torch.Tensor, num_rows: int
    ) -> None:
        order = torch.argsort(rows, stable=True)
        self.cols, self.extra = cols[order], extra[order]
        counts = torch.bincount(rows, minlength=num_rows)
        self.indptr = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
        torch.cumsum(counts, 0, out=self.indptr[1:])
        self.num_rows = num_rows

    def matrix(self, values: torch.Tensor, num_cols: int) -> torch.Tensor:
        """(num_rows, num_cols) sparse CSR with `values` on the pattern."""
        with warnings.catch_warnings():  # torch marks sparse CSR as beta
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.indptr, self.cols, values, (self.num_rows, num_cols), check_invariants=False
            )


def _solve(x: torch.Tensor, y: torch.Tensor, entries: _Entries, reg: float, steps: int) -> None:
    """Update every row of `x` (N, d) in place with `steps` CG steps from its current value,
    towards the iALS solution for fixed `y` (M, d). The per-pair work is a sampled product
    (SDDMM) and a sparse x dense product, never an (entries, d) temporary."""
    gram = y.T @ y  # (d, d), shared by every row
    gram.diagonal().add_(reg)
    num_cols = y.shape[0]
    pattern = entries.matrix(torch.ones_like(entries.extra), num_cols)

    def apply(v: torch.Tensor) -> torch.Tensor:
        """(Y'Y + reg I + Y'(C - I)Y) v for each row: (N, d) -> (N, d)."""
        along = torch.sparse.sampled_addmm(pattern, v, y.T, beta=0.0).values()  # (E,) y_i . v_u
        return torch.addmm(entries.matrix(along * entries.extra, num_cols) @ y, v, gram)

    target = entries.matrix(1.0 + entries.extra, num_cols) @ y  # Y' C p: (N, d)
    residual = target - apply(x)
    direction = residual.clone()
    norm = (residual * residual).sum(1)  # (N,)
    for _ in range(steps):
        step_dir = apply(direction)
        step = norm / (direction * step_dir).sum(1).clamp(min=1e-20)
        x.addcmul_(step.unsqueeze(1), direction)
        residual.addcmul_(step.unsqueeze(1), step_dir, value=-1.0)
        new_norm = (residual * residual).sum(1)
        direction = residual + (new_norm / norm.clamp(min=1e-20)).unsqueeze(1) * direction
        norm = new_norm

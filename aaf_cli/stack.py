"""What every batched group of models shares: its members on a leading model axis, and the
per-model learning rates of its parameters (``models.Ensemble``, ``kan.KanEnsemble``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class Stack(nn.Module):
    """M models of one structure whose every parameter leads with the model axis ``[M, ...]``.

    ``members``: one ``models.ModelSpec`` per model (its variant, seed and own rate).
    """

    def __init__(self, members: Sequence[Any]) -> None:
        super().__init__()
        self.members = list(members)

    @property
    def size(self) -> int:
        """Number of models M."""
        return len(self.members)

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = next(self.parameters()).dtype
        return dtype

    def parameter_count(self) -> int:
        """Trainable parameters of one model."""
        return sum(p[0].numel() for p in self.parameters())

    def rows(
        self, default_lr: float, offset: int = 0, scale: float = 1.0
    ) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Every parameter with its per-model learning rates ``[M]`` (the variant's own times
        ``scale``, or ``default_lr``) and the index of its first model; every parameter of a
        model (an activation's too) gets the same rate. ``scale``: a training phase's rate over
        ``train.lr``, which a variant's own rate follows."""
        p0 = next(self.parameters())
        lr = torch.tensor(
            [default_lr if m.lr is None else m.lr * scale for m in self.members],
            dtype=p0.dtype,
            device=p0.device,
        )
        return [(p, lr, offset) for p in self.parameters()]

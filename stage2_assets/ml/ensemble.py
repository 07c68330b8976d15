"""The ensemble: M small MLPs (14 -> hidden -> hidden -> 1) held as one batched module.

Stacking the members' weights and multiplying with ``torch.baddbmm`` trains all members in one
pass over each batch: 3-4x faster than one member after another on two CPU cores (stack notes),
with the same accuracy. Member k is initialized from seed ``base_seed + k``.

This module is plain PyTorch; it is all inference needs, so loading a model never imports
Lightning. Weights travel as safetensors: tensors only, no code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class BatchedMLP(nn.Module):
    def __init__(
        self, num_members: int, num_features: int, hidden: int, base_seed: int = 0
    ) -> None:
        super().__init__()
        self.num_members, self.num_features, self.hidden = num_members, num_features, hidden
        shapes = {
            "w1": (num_features, hidden),
            "b1": (1, hidden),
            "w2": (hidden, hidden),
            "b2": (1, hidden),
            "w3": (hidden, 1),
            "b3": (1, 1),
        }
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.empty(num_members, *shape)))
        self.reset_parameters(base_seed)

    def reset_parameters(self, base_seed: int) -> None:
        """Kaiming-uniform like ``nn.Linear``, each member from its own seed."""
        with torch.no_grad():
            for k in range(self.num_members):
                generator = torch.Generator().manual_seed(base_seed + k)
                for w, b in (("w1", "b1"), ("w2", "b2"), ("w3", "b3")):
                    weight, bias = getattr(self, w), getattr(self, b)
                    bound = 1.0 / math.sqrt(weight.shape[1])
                    weight[k].uniform_(-bound, bound, generator=generator)
                    bias[k].uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, shape (members, rows)."""
        h = x.unsqueeze(0).expand(self.num_members, -1, -1)
        h = torch.relu(torch.baddbmm(self.b1, h, self.w1))
        h = torch.relu(torch.baddbmm(self.b2, h, self.w2))
        return torch.baddbmm(self.b3, h, self.w3).squeeze(-1)


def member_probabilities(model: BatchedMLP, x: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """P(up) of every member for scaled features ``x``, shape (members, rows)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            chunk = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=device)
            out.append(torch.sigmoid(model(chunk)).cpu().numpy())
    return (
        np.concatenate(out, axis=1) if out else np.empty((model.num_members, 0), dtype=np.float32)
    )

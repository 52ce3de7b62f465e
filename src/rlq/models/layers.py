"""Input normalisation, Max-Avg pooling, BN-neck and the classifier heads (docs/method.md §2.2, §2.3, §2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalize",
    "MaxAvgPool",
    "BNNeck",
    "LinearHead",
    "CosineClassifier",
]

#: ImageNet normalisation constants (docs/method.md §3.1).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Map 0-1 RGB (B x 3 x H x W) to ImageNet-normalised input; the model owns this step (docs/design.md boundary 5)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (x - mean) / std in x's dtype."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class MaxAvgPool(nn.Module):
    """Global max-pool concatenated with global avg-pool, in that order: B x C x H x W -> B x 2C (§2.2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return [max, mean] over the spatial dimensions."""
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d feature neck; weight ~ N(1, 0.02), bias 0, both trainable (docs/method.md §2.2)."""

    def reset_parameters(self) -> None:
        """Reset running stats and initialise the affine parameters as in §2.2."""
        self.reset_running_stats()
        if self.affine:
            nn.init.normal_(self.weight, 1.0, 0.02)
            nn.init.zeros_(self.bias)


class LinearHead(nn.Linear):
    """Linear classifier with bias; W ~ N(0, 0.001^2), b = 0 (docs/method.md §2.3: ID, pose and gender heads)."""

    def reset_parameters(self) -> None:
        """Initialise as in §2.3."""
        nn.init.normal_(self.weight, 0.0, 0.001)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class CosineClassifier(nn.Module):
    """Bias-free cosine classifier returning raw cosines cos(f, w_k); the scale s lives in the loss (§2.3)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Rows ~ U(-1, 1), then L2-normalised (docs/method.md §2.3)."""
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0)
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, f: torch.Tensor, detach_weight: bool = False) -> torch.Tensor:
        """Cosines B x num_classes; ``detach_weight`` stops gradients into the head (L_CAL, docs/method.md §4 step 3)."""
        w = self.weight.detach() if detach_weight else self.weight
        return F.linear(F.normalize(f, dim=1), F.normalize(w, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"

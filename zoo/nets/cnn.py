"""A VGG-style convolutional net: blocks of convs, each block halving the resolution."""

from __future__ import annotations

import torch
from torch import nn

from zoo.nets.layers import activation_layer


class CNN(nn.Module):
    """[conv-(BN)-act x convs_per_block -> pool -> dropout] per entry of `channels` -> GAP -> Linear.

    Global average pooling makes the net work at any image size.

    Args:
        num_classes: outputs of the head.
        in_chans: image channels.
        channels: output channels of each block.
        kernel_size: conv kernel size (odd; padding keeps the resolution).
        convs_per_block: convs in each block.
        pool: "max" or "avg" pooling at the end of each block.
        batch_norm: BatchNorm2d after each conv.
        activation: any timm activation name.
        dropout: Dropout2d at the end of each block.
        head_dropout: dropout before the final Linear.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        channels: tuple[int, ...] = (32, 64, 128),
        kernel_size: int = 3,
        convs_per_block: int = 2,
        pool: str = "max",
        batch_norm: bool = True,
        activation: str = "relu",
        dropout: float = 0.1,
        head_dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        act = activation_layer(activation)
        blocks = []
        width = in_chans
        for out in channels:
            layers: list[nn.Module] = []
            for _ in range(convs_per_block):
                layers.append(
                    nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
                )
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(act())
                width = out
            layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        # Grad-CAM looks at the last activation before the final pooling: the finest last-block map.
        self.cam_layer = blocks[-1][-3 if dropout > 0 else -2]
        self.num_features = width
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)  # (B, C, H, W) -> (B, channels[-1], H / 2**len(channels), ...)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C', h, w) -> (B, num_classes); `pre_logits`: the pooled (B, C') the classifier reads (timm's API)."""
        x = self.pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

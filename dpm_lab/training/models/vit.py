"""A small Vision Transformer for 32x32 images: torchvision's ``VisionTransformer`` with one change,
so that a physically pruned copy still runs.

torchvision's ``_process_input`` reshapes the patch embedding with the width it stored at
construction (``self.hidden_dim``). Torch-Pruning narrows the layers, not that number, so a ViT
whose embedding channels were removed fails in its first reshape. Reading the width from the
tensor instead makes the model prunable along every dimension Torch-Pruning knows (embedding,
attention, MLP); everything else, weights and initialisation included, is torchvision's.
"""
from __future__ import annotations

import torch
from torchvision.models.vision_transformer import VisionTransformer


class PrunableViT(VisionTransformer):
    """``VisionTransformer`` whose patch embedding reshape follows the tensor's width."""

    def _process_input(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.patch_size
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size} but got {h}!")
        torch._assert(w == self.image_size, f"Wrong image width! Expected {self.image_size} but got {w}!")
        x = self.conv_proj(x)                       # (n, hidden, h/p, w/p)
        x = x.reshape(n, x.shape[1], (h // p) * (w // p))
        return x.permute(0, 2, 1)                   # (n, tokens, hidden)


def vit_tiny(num_classes: int = 10) -> PrunableViT:
    """ViT for CIFAR-sized inputs: 4x4 patches (64 tokens), 6 layers, 4 heads, width 128, MLP 256
    (about 0.8 M parameters)."""
    return PrunableViT(image_size=32, patch_size=4, num_layers=6, num_heads=4, hidden_dim=128,
                       mlp_dim=256, num_classes=num_classes)

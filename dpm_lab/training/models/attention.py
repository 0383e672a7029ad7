"""Self-attention with a separate ``qkv`` projection, so that whole heads can be pruned.

``nn.MultiheadAttention`` ties its inner width to ``embed_dim``: Torch-Pruning can only narrow it
along the embedding (every block of the residual stream at once), never drop one head. Attention
written the way timm writes it, ``qkv = Linear(E, 3E)`` then ``proj = Linear(E, E)``, has no such
tie: Torch-Pruning's dependency graph maps the v rows of ``qkv`` onto ``proj``'s input columns, and
removing one head's q, k and v rows with those columns leaves a narrower, working attention
(this is what Torch-Pruning's ``prune_num_heads`` does). :class:`QKVAttention` reads the number of
heads from its weights, so a pruned copy runs, and a saved one reloads, with nothing to update.

:func:`split_attention` swaps every ``nn.MultiheadAttention`` of a model (torchvision's ViT
included) for a :class:`QKVAttention` holding the same weights: the function is unchanged
(tested in float64), and :class:`dpm_lab.pruning.ChannelGroups` can then prune heads
(``granularity="head"``).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class QKVAttention(nn.Module):
    """Multi-head self-attention: ``qkv`` (E → 3·heads·head_dim), scaled dot product, ``proj``.

    Called like a batch-first ``nn.MultiheadAttention`` used for self-attention,
    ``attn(x, x, x, need_weights=False) -> (out, None)``, so it drops into torchvision's
    ``EncoderBlock``. ``num_heads`` follows ``qkv``'s width; ``head_dim`` is fixed.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @property
    def num_heads(self) -> int:
        return self.qkv.out_features // (3 * self.head_dim)

    def forward(self, query, key=None, value=None, need_weights: bool = False, **_):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("QKVAttention is self-attention: key and value must be the query")
        if need_weights:
            raise ValueError("QKVAttention does not return attention weights (need_weights=False)")
        b, n, _ = query.shape
        q, k, v = self.qkv(query).reshape(b, n, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4)
        # written out rather than F.scaled_dot_product_attention, so that Torch-Pruning's
        # tracer sees the matmuls that tie q, k and v to proj's input columns
        x = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, -1)), None

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "QKVAttention":
        """The same attention as ``mha`` (batch-first self-attention with packed in-projection)."""
        if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None:
            raise ValueError("split_attention needs batch_first nn.MultiheadAttention with one "
                             "packed in_proj_weight and no bias_k/bias_v (torchvision ViT's kind)")
        attn = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None)
        attn = attn.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            attn.qkv.weight.copy_(mha.in_proj_weight)
            attn.proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                attn.qkv.bias.copy_(mha.in_proj_bias)
                attn.proj.bias.copy_(mha.out_proj.bias)
        return attn


def split_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` (in place) by the equivalent
    :class:`QKVAttention`; returns ``model``. Dropout inside the attention is not carried over
    (torchvision's ViT uses none)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, child_name, QKVAttention.from_multihead(child))
    return model

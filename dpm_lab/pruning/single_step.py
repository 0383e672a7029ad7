"""The single-step baseline: select once, remove at once with Torch-Pruning, then fine-tune.

This is what every host does without DPM, and the reference that Smooth Pruning with N = 1 must
reproduce exactly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..metrics import macs_params
from .finalize import remove_channels
from .groups import ChannelGroups
from .selection import make_importance, select


def single_step_prune(model: nn.Module, target, criterion: str = "l2", input_size=(1, 3, 32, 32),
                      groups: ChannelGroups | None = None):
    """Select structures for ``target`` by ``criterion`` and physically remove them now.

    Returns ``(model, history, selected_ids)``; ``model`` is pruned in place.
    """
    device = next(model.parameters()).device
    groups = groups or ChannelGroups(model, torch.randn(*input_size, device=device))
    ids = select(groups, groups.importance(make_importance(criterion)), target,
                 input_size=input_size, dense_macs=macs_params(model, input_size)[0])
    history = remove_channels(model, groups.split(ids), input_size)
    return model, history, ids

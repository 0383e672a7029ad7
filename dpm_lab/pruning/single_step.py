"""The single-step baseline: select once, remove at once with Torch-Pruning, then fine-tune.

This is what every host does without DPM, and the reference that Smooth Pruning with N = 1 must
reproduce exactly.
"""
from __future__ import annotations

import torch.nn as nn

from ..training.metrics import example_input, macs_params
from .finalize import remove_channels
from .groups import ChannelGroups
from .selection import scores, select


def single_step_prune(model: nn.Module, target, criterion: str = "l2", input_size=(1, 3, 32, 32),
                      groups: ChannelGroups | None = None):
    """Select structures for ``target`` by ``criterion`` and physically remove them now.

    Returns ``(model, history, selected_ids)``; ``model`` is pruned in place. A gradient
    criterion (``taylor``) needs ``.grad`` filled first (:func:`accumulate_gradients`).
    """
    groups = groups or ChannelGroups(model, example_input(model, input_size))
    ids = select(groups, scores(groups, criterion), target,
                 input_size=input_size, dense_macs=macs_params(model, input_size)[0])
    history = remove_channels(model, groups.split(ids), input_size)
    return model, history, ids

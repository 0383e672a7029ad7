"""Pruning: groups -> selection -> decay (SP) -> rectification (SR) -> removal.

Typical use (DPM on any model that Torch-Pruning can trace)::

    groups = ChannelGroups(model, torch.randn(1, 3, 32, 32))
    dpm = SmoothPruning(groups, MacsTarget(0.5), decay_steps=200, rounds=range(0, 2000, 200),
                        rectifier=SelfRectifying())
    fit(model, train_loader, test_loader, cfg, hooks=[dpm])
    model, history = finalize(model, dpm)
"""
from .decay import DECAYING, FREE, PRUNED, RELEASED, SmoothPruning
from .finalize import effective_macs_params, finalize, load_pruned, remove_channels, save_pruned
from .groups import ChannelGroups, output_layer
from .rectify import SelfRectifying
from .selection import CRITERIA, ChannelRatio, MacsTarget, make_importance, select
from .single_step import single_step_prune

__all__ = ["ChannelGroups", "output_layer", "ChannelRatio", "MacsTarget", "CRITERIA",
           "make_importance", "select", "SmoothPruning", "SelfRectifying", "single_step_prune",
           "remove_channels", "effective_macs_params", "finalize", "save_pruned", "load_pruned",
           "FREE", "DECAYING", "PRUNED", "RELEASED"]

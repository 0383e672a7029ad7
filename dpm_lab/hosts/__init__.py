"""Host frameworks that DPM plugs into: each decides *when* and *what* to prune; Smooth Pruning
and Self-Rectifying (``dpm_lab.pruning``) replace only their one-step removal.

- :mod:`.depgraph` — Torch-Pruning's ``group_sl`` (sparse learning + progressive global pruning);
- :mod:`.otov2` — OTOv2's DHSPG optimiser over zero-invariant groups;
- :mod:`.gatedecorator` — Gate Decorator's gated BN, Taylor gate scores and Tick-Tock schedule.
"""
from .depgraph import ProgressiveSelector, SparseLearning, make_pruner, progressive_prune
from .gatedecorator import (GatedBatchNorm2d, GateTaylor, TaylorSelector, TickTock, fold_gates,
                            gate_entries, gate_smooth_pruning, mask_structures, melt_gates)
from .otov2 import DHSPG, SparsityLog, pruned_groups

HOSTS = ("depgraph", "otov2", "gatedecorator")

__all__ = ["HOSTS", "make_pruner", "SparseLearning", "progressive_prune", "ProgressiveSelector",
           "DHSPG", "SparsityLog", "pruned_groups", "GatedBatchNorm2d", "GateTaylor", "fold_gates",
           "melt_gates", "mask_structures", "TaylorSelector", "TickTock", "gate_entries",
           "gate_smooth_pruning"]

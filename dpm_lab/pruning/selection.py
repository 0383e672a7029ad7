"""Importance criteria and selection of structures to a pruning target.

Two kinds of target:

- :class:`ChannelRatio` — prune a fixed fraction of every group (local ranking, Torch-Pruning's
  default scope);
- :class:`MacsTarget` — prune, by one global ranking, until the *effective* MACs (counted by
  Torch-Pruning on a physically pruned copy) are at most ``ratio`` × the dense MACs. The number
  of structures is found by bisection, since MACs fall monotonically as structures are added.

Selection is incremental: structures already decaying or pruned count toward the target, so a
host can call it again after Self-Rectifying released some, and it picks only replacements.
Released structures are picked again only when nothing else can meet the target.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp

from .. import distributed
from .finalize import effective_macs_params
from .groups import ChannelGroups

CRITERIA = ("l2", "l1", "bn", "taylor", "random", "inverse_l2")
GRADIENT_CRITERIA = ("taylor",)


def make_importance(criterion: str):
    """A Torch-Pruning importance object by name. ``taylor`` needs gradients in ``.grad``
    (see :func:`accumulate_gradients` and :func:`scores`)."""
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "bn":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if criterion == "random":
        return tp.importance.RandomImportance()
    if criterion == "inverse_l2":  # a deliberately wrong choice, for testing Self-Rectifying
        return InverseImportance(tp.importance.GroupMagnitudeImportance(p=2))
    raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")


class InverseImportance(tp.importance.Importance):
    """The negated scores of another importance: prunes the *most* important structures first.
    A mis-selection on purpose, to ask whether Self-Rectifying releases what should stay."""

    def __init__(self, importance):
        self.importance = importance

    def __call__(self, group):
        return -self.importance(group)


def scores(groups: ChannelGroups, criterion: str, importance=None) -> torch.Tensor:
    """Importance ``[S]`` of every structure under ``criterion`` (higher = more important).

    A gradient criterion (``taylor``: |w · ∂L/∂w| per structure) with no gradient present would
    rank every structure as zero, i.e. at random; that raises instead, saying how to provide one.
    """
    if criterion in GRADIENT_CRITERIA and all(e.param.grad is None for e in groups.entries):
        raise ValueError(f"criterion {criterion!r} ranks by weight x gradient, but the model has no "
                         "gradients: call dpm_lab.pruning.accumulate_gradients(model, loader) "
                         "before selecting (the pipelines do, for the step-0 selection)")
    return groups.importance(importance or make_importance(criterion))


def accumulate_gradients(model: torch.nn.Module, loader, batches: int = 4, device=None) -> None:
    """Sum the loss gradients of ``batches`` training batches into ``.grad`` (a calibration pass
    for gradient criteria before any optimiser step). The model runs in train mode, as during
    training; its BN running statistics are restored afterwards, so only ``.grad`` changes.
    Under DDP each rank runs its shard of each batch and the gradients are averaged over ranks."""
    if batches < 1:
        raise ValueError(f"calibration batches must be >= 1, got {batches!r}")
    device = torch.device(device) if device else next(model.parameters()).device
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        x, y = x.to(device), y.to(device)
        torch.nn.functional.cross_entropy(model(x), y).backward()
    distributed.average_gradients(model)  # under DDP: every rank ranks on the same gradients
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    model.train(was_training)


@dataclass(frozen=True)
class ChannelRatio:
    """Prune ``ratio`` of the channels of every group (at least one channel always stays)."""

    ratio: float

    def __post_init__(self):
        if not 0 <= self.ratio < 1:
            raise ValueError(f"channel ratio must be in [0, 1), got {self.ratio!r}")


@dataclass(frozen=True)
class MacsTarget:
    """Prune until effective MACs <= ``ratio`` × dense MACs, by global ranking.
    ``max_group_ratio`` caps how much of any one group may go."""

    ratio: float
    max_group_ratio: float = 0.95

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise ValueError(f"MACs target must be in (0, 1], got {self.ratio!r}")
        if not 0 < self.max_group_ratio < 1:
            raise ValueError(f"max_group_ratio must be in (0, 1), got {self.max_group_ratio!r}")


def select(groups: ChannelGroups, scores: torch.Tensor, target, taken=None, released=None,
           input_size=(1, 3, 32, 32), dense_macs: int | None = None) -> torch.Tensor:
    """Ids of the structures to add so that ``taken`` ∪ result meets ``target``.

    ``scores``: importance ``[S]`` (low = prune first). ``taken``: bool ``[S]`` of structures
    already decaying or pruned. ``released``: bool ``[S]`` of structures Self-Rectifying released;
    they come last in the ranking. ``dense_macs``: MACs of the unpruned model (MacsTarget).
    """
    S = groups.num_structures
    taken = np.zeros(S, bool) if taken is None else taken.cpu().numpy().astype(bool)
    released = np.zeros(S, bool) if released is None else released.cpu().numpy().astype(bool)
    scores = scores.cpu().numpy().astype(np.float64)
    group_of = groups.group_of.cpu().numpy()
    sizes = np.array([g.size for g in groups.groups])
    max_ratio = target.ratio if isinstance(target, ChannelRatio) else target.max_group_ratio
    quota = np.minimum(np.floor(max_ratio * sizes + 1e-9).astype(int), sizes - 1)
    room = quota - np.bincount(group_of[taken], minlength=len(sizes))
    # Candidates in pruning order: free ones by score, released ones only after all others.
    free = np.flatnonzero(~taken)
    order = free[np.lexsort((scores[free], released[free]))]
    picked = []
    for s in order:  # host-side, once per selection round
        if room[group_of[s]] > 0:
            room[group_of[s]] -= 1
            picked.append(s)
    picked = np.array(picked, dtype=np.int64)
    if isinstance(target, ChannelRatio):
        return torch.from_numpy(np.sort(picked))
    if dense_macs is None:
        raise ValueError("MacsTarget selection needs dense_macs")
    budget = target.ratio * dense_macs
    base = np.flatnonzero(taken)

    def macs_with(k: int) -> int:
        ids = np.concatenate([base, picked[:k]])
        return effective_macs_params(groups.model, groups.split(ids), input_size)[0]

    if macs_with(0) <= budget:
        return torch.zeros(0, dtype=torch.long)
    lo, hi = 0, len(picked)  # macs_with(lo) > budget; find the smallest k with macs <= budget
    if macs_with(hi) > budget:
        raise ValueError(f"MACs target {target.ratio} cannot be met with max_group_ratio "
                         f"{target.max_group_ratio}; best reachable is "
                         f"{macs_with(hi) / dense_macs:.3f} of dense MACs")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if macs_with(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return torch.from_numpy(np.sort(picked[:hi]))

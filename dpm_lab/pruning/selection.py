"""Importance criteria and selection of structures to a pruning target.

Two kinds of target:

- :class:`ChannelRatio` — prune a fixed fraction of every group (local ranking, Torch-Pruning's
  default scope);
- :class:`MacsTarget` — prune, by one global ranking, until the *effective* MACs (counted by
  Torch-Pruning on a physically pruned copy) are at most ``ratio`` × the dense MACs. The number
  of structures is found by bisection, since MACs fall monotonically as structures are added.

Selection is incremental: structures already decaying or pruned count toward the target, so a
host can call it again after Self-Rectifying released some, and it picks only replacements.
Released structures are picked again only when nothing else can meet the target. Such later
rounds score with :class:`FreeNormalized`: each group's normaliser is taken over its free
structures only, so the taken ones cannot shift the ranking of the others.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp

from ..training import distributed
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


class FreeNormalized(tp.importance.Importance):
    """``importance`` with each group's normaliser taken over the group's *free* channels only.

    Torch-Pruning's magnitude, BN and Taylor importances divide a group's scores by a statistic of
    the whole group (``normalizer``: ``"mean"`` by default; the DepGraph host uses ``"max"``), so
    that groups can be ranked against each other. After the first selection round a group also
    holds structures that are decaying, zeroed or released (these keep partly decayed weights);
    in the whole-group mean they would deflate the statistic and inflate the scores of the
    group's free structures, pushing replacements away from the groups already pruned. Here the
    raw scores (``normalizer=None``) of the whole group are divided by the statistic of its free
    channels, which is what the importance computes once the taken structures are removed: a
    free structure's score then depends on free structures alone, and the taken ones keep a
    score on the same scale (released ones are ranked among themselves by it).

    ``free``: ``{root module: bool tensor over the group's root channels}`` (see
    :func:`free_channels`), or ``None`` while every channel is free; a host may reassign it
    between calls. With every channel free the result is the importance's own, bit for bit (the
    same tensor divided by the same statistic). A group without free channels keeps the
    whole-group statistic (its scores then order nothing that can still be picked).
    """

    STATISTICS = {"mean": torch.mean, "max": torch.max, "sum": torch.sum}

    def __init__(self, importance, free: dict | None = None):
        normalizer = getattr(importance, "normalizer", None)
        if normalizer is not None and normalizer not in self.STATISTICS:
            raise ValueError(f"normalizer {normalizer!r} cannot be restricted to free channels; "
                             f"use one of: None, {', '.join(map(repr, self.STATISTICS))}")
        self.normalizer, self.free, self.raw = normalizer, free, importance
        if normalizer is not None:
            self.raw = copy.copy(importance)
            self.raw.normalizer = None

    def __call__(self, group):
        imp = self.raw(group)
        if imp is None or self.normalizer is None:
            return imp
        basis = imp
        if self.free is not None:
            root = group[0].dep.target.module
            if root not in self.free:
                raise KeyError(f"no free-channel mask for the group rooted at {root!r}; "
                               "build free with free_channels() from the same model's groups")
            free = self.free[root].to(imp.device)
            if free.any():
                basis = imp[free]
        return imp / self.STATISTICS[self.normalizer](basis)


def free_channels(groups: ChannelGroups, free: torch.Tensor) -> dict:
    """``{root module: bool per root channel}`` for :class:`FreeNormalized` from a bool ``[S]``
    per structure (a structure of a group with channel blocks, or a head, covers several root
    channels)."""
    free = free.cpu()
    return {g[0].dep.target.module: free[meta.offset + meta.position]
            for g, meta in zip(groups.groups_tp, groups.groups)}


def free_normalized(importance, free: dict | None = None):
    """``importance`` normalised over free channels (:class:`FreeNormalized`); an
    :class:`InverseImportance` negates the normalised scores of the importance it wraps."""
    if isinstance(importance, InverseImportance):
        return InverseImportance(free_normalized(importance.importance, free))
    return FreeNormalized(importance, free)


def scores(groups: ChannelGroups, criterion: str, importance=None,
           exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Importance ``[S]`` of every structure under ``criterion`` (higher = more important).

    ``exclude``: bool ``[S]`` of structures already decaying, pruned or released, for a later
    selection round. They are left out of each group's normaliser (:class:`FreeNormalized`), so
    their values, zero or partly decayed, leave the free structures' scores unchanged; the free
    ones rank as they would with the excluded ones removed. With nothing excluded the scores are
    the criterion's own, bit for bit, so a step-0 selection is the same with or without it.

    A gradient criterion (``taylor``: |w · ∂L/∂w| per structure) with no gradient present would
    rank every structure as zero, i.e. at random; that raises instead, saying how to provide one.
    """
    if criterion in GRADIENT_CRITERIA and all(e.param.grad is None for e in groups.entries):
        raise ValueError(f"criterion {criterion!r} ranks by weight x gradient, but the model has no "
                         "gradients: call dpm_lab.pruning.accumulate_gradients(model, loader) "
                         "before selecting (the pipelines do, for the step-0 selection)")
    importance = importance or make_importance(criterion)
    if exclude is not None:
        importance = free_normalized(importance, free_channels(groups, ~exclude.cpu().bool()))
    return groups.importance(importance)


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

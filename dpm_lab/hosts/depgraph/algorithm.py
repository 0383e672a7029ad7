"""DepGraph as a host: Torch-Pruning's ``group_sl`` pipeline, and DPM inside it.

The host, as Torch-Pruning's CIFAR benchmark runs it (its ``benchmarks/main.py`` with
``--method group_sl``; Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023):

1. *Sparse learning* (optional, "SL"): train with ``GroupNormPruner.regularize`` adding
   reg·s_k·w to every coupled slice's gradient after ``backward`` (least important channels up
   to 16× stronger), ``update_regularizer()`` once per epoch, the optimiser's weight decay off.
2. *Progressive pruning*: global ranking by group L2 magnitude (normalised by the group's max),
   ``pruning_ratio=1.0`` over 400 iterative steps, calling ``pruner.step()`` until the MACs
   speed-up target holds. Each step removes channels physically; no training in between.
3. Fine-tuning.

With DPM (``sp``/``dpm``) the same pruner chooses the channels, in interactive mode, but nothing
is removed: the pruning happens in rounds during fine-tuning. At each round the pruner steps
until the *effective* MACs of everything selected so far meet that round's share of the target;
the new channels decay over N steps (:class:`SmoothPruning`) while training continues, SR may
release some, and later rounds pick replacements. Zeroed channels keep zero importance, so the
pruner, which never sees a removal, still yields the cumulative set it would have removed
(interactive mode yields groups without removing them); channels the host already holds or SR
released are skipped, and picks are zeroed provisionally between the pruner's steps as the
host's removal would. With N = 1 and
no training between rounds this selects and removes exactly what the host removes (tested).

Choice (documented, a parameter): ``normalizer='max'`` for both the SL and the no-SL variant.
Torch-Pruning's ``group_norm`` baseline uses ``'mean'``. With soft pruning the zeroed, decaying
and released channels stay in the model, where a whole-group statistic would count them; the
pruner's importance is therefore :class:`~dpm_lab.pruning.selection.FreeNormalized`, as in the
core's later rounds, and at a round each group is normalised over the channels that are neither
held, released nor already picked: over what the host would still have after its removals.
Outside rounds (sparse learning, the host's own pruning) every channel is free and the scores
are Torch-Pruning's own.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from ...pruning.decay import DECAYING, PRUNED, RELEASED, SmoothPruning
from ...pruning.finalize import effective_macs_params
from ...pruning.groups import ChannelGroups, output_layer
from ...pruning.selection import FreeNormalized, free_channels
from ...training.engine import Hook, TrainState
from ...training.metrics import example_input, macs_params


def make_pruner(model: nn.Module, input_size=(1, 3, 32, 32), reg: float = 5e-4,
                normalizer: str = "max", iterative_steps: int = 400) -> tp.pruner.GroupNormPruner:
    """Torch-Pruning's ``group_sl`` pruner: global ranking by group L2 magnitude, ratio 1.0 over
    ``iterative_steps`` steps, the output layer ignored. ``reg`` matters only for sparse learning.
    The importance is :class:`FreeNormalized` so that DPM rounds can leave held channels out of
    the normaliser (:class:`ProgressiveSelector`); with all channels free it is Torch-Pruning's."""
    importance = FreeNormalized(tp.importance.GroupMagnitudeImportance(p=2, normalizer=normalizer))
    with torch.enable_grad():
        return tp.pruner.GroupNormPruner(
            model, example_input(model, input_size), importance=importance,
            global_pruning=True, pruning_ratio=1.0, iterative_steps=iterative_steps,
            ignored_layers=[output_layer(model)], reg=reg)


class SparseLearning(Hook):
    """Torch-Pruning's sparse learning as an engine hook: ``regularize`` between backward and
    step, ``update_regularizer`` after every epoch (README "Sparse Training" loop order).
    Train with weight decay 0 while it runs, as Torch-Pruning's benchmark does."""

    def __init__(self, pruner: tp.pruner.GroupNormPruner):
        self.pruner = pruner

    def before_step(self, state: TrainState) -> None:
        self.pruner.regularize(state.model)

    def on_epoch_end(self, state: TrainState) -> None:
        self.pruner.update_regularizer()


def progressive_prune(pruner: tp.pruner.GroupNormPruner, model: nn.Module, speedup: float,
                      input_size=(1, 3, 32, 32)) -> dict:
    """The host's hard step: ``pruner.step()`` (physical removal) until dense/pruned MACs >=
    ``speedup``. Returns the steps taken and the MACs/params before and after."""
    if speedup <= 1:
        raise ValueError(f"speed-up must be > 1, got {speedup!r}")
    dense_macs, dense_params = macs_params(model, input_size)
    macs, params = dense_macs, dense_params
    while dense_macs / macs < speedup:
        if pruner.current_step >= pruner.iterative_steps:
            raise ValueError(f"speed-up {speedup} not reached after {pruner.iterative_steps} "
                             f"pruning steps (got {dense_macs / macs:.3f})")
        pruner.step()
        macs, params = macs_params(model, input_size)
    return {"steps": pruner.current_step, "dense_macs": dense_macs, "dense_params": dense_params,
            "macs": macs, "params": params}


class ProgressiveSelector:
    """The DepGraph host's choice at a DPM round, for :class:`SmoothPruning`'s ``selector``.

    Round r of ``num_rounds`` (counted from the rounds the pruner has held) aims at MACs ratio
    1 − (1 − 1/speedup)·(r + 1)/num_rounds of dense, so the last round meets the speed-up. It
    steps the pruner interactively, adding the channels it yields that are neither held already
    nor released, until the effective MACs meet the round's budget.
    """

    def __init__(self, pruner: tp.pruner.GroupNormPruner, groups: ChannelGroups, speedup: float,
                 num_rounds: int = 1, input_size=(1, 3, 32, 32)):
        if speedup <= 1:
            raise ValueError(f"speed-up must be > 1, got {speedup!r}")
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds!r}")
        self.pruner, self.groups, self.speedup = pruner, groups, speedup
        self.num_rounds, self.input_size = num_rounds, input_size
        self.names = {m: n for n, m in groups.model.named_modules()}
        self.dense_macs = macs_params(groups.model, input_size)[0]
        self.log: list[dict] = []

    def budget(self, r: int) -> float:
        share = min(r + 1, self.num_rounds) / self.num_rounds
        return self.dense_macs * (1 - (1 - 1 / self.speedup) * share)

    def __call__(self, pruner: SmoothPruning, step: int) -> torch.Tensor:
        status = pruner.status.cpu()
        held = (status == DECAYING) | (status == PRUNED)
        skip = held | (status == RELEASED)
        budget = self.budget(len(self.log))
        picked = torch.zeros_like(skip)

        def macs() -> int:
            ids = (held | picked).nonzero().flatten()
            return effective_macs_params(self.groups.model, self.groups.split(ids),
                                         self.input_size)[0]

        # Between its steps the host removes what it chose, which lowers coupled channels'
        # importances (a removed filter takes its slice of every consumer with it). Zero the
        # picks provisionally while stepping, so the pruner ranks as it would after removal;
        # the weights come back afterwards and Smooth Pruning takes over from L_init. Held,
        # released and picked channels are left out of each group's normaliser, as removal would.
        # The weights and the free mask are restored even when the budget cannot be reached.
        saved = [e.param.detach().clone() for e in self.groups.entries]
        current, tp_steps = macs(), 0
        try:
            while current > budget:
                if self.pruner.current_step >= self.pruner.iterative_steps:
                    raise ValueError(f"round {len(self.log)}: MACs budget "
                                     f"{budget / self.dense_macs:.3f} of dense not reached after "
                                     f"{self.pruner.iterative_steps} pruner steps")
                added = False
                self.pruner.importance.free = free_channels(self.groups, ~(skip | picked))
                for group in self.pruner.step(interactive=True):
                    root = self.names[group[0].dep.target.module]
                    ids = self.groups.structure_ids(root, group[0].idxs)
                    new = ids[~(skip[ids] | picked[ids])]
                    if len(new):
                        picked[new], added = True, True
                tp_steps += 1
                if added:
                    keep = (~picked).float().to(self.groups.group_of.device)
                    self.groups.scale_(keep)
                    current = macs()
        finally:
            self.pruner.importance.free = None
            with torch.no_grad():
                for e, w in zip(self.groups.entries, saved):
                    e.param.copy_(w)
        self.log.append({"step": step, "budget": budget / self.dense_macs,
                         "macs_ratio": current / self.dense_macs, "pruner_steps": tp_steps,
                         "selected": int(picked.sum())})
        return picked.nonzero().flatten()

    def state_dict(self) -> dict:
        return {"log": self.log, "pruner_step": self.pruner.current_step}

    def load_state_dict(self, state: dict) -> None:
        self.log, self.pruner.current_step = state["log"], state["pruner_step"]

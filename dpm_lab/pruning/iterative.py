"""Iterative pruning: channels physically removed in k rounds during fine-tuning, the amount per
round following a schedule. The baseline that asks whether DPM gains from decaying slowly or from
pruning in several steps.

Torch-Pruning's own iterative machinery (``BasePruner(iterative_steps=k,
iterative_pruning_ratio_scheduler=...)``) schedules a *channel* ratio: each ``step()`` prunes every
group (or the global ranking) to the next ratio of a list ``scheduler(ratio, k)`` of ``k + 1``
ratios ``[0, …, ratio]``. The core methods' target is a fraction of the dense MACs, found by
bisection over one global ranking (:func:`select`), which a channel ratio cannot express (the
MACs a channel costs differ between layers). So the schedule here is Torch-Pruning's, over the
fraction of dense MACs *removed* (or over the channel ratio, for a :class:`ChannelRatio` target):
round ``i`` (0-based) of ``k`` reaches ``scheduler(1 - target, k)[i + 1]``, Torch-Pruning's
``step()`` ``i + 1``, and the structures are chosen there by the project's :func:`select` with the
same criterion and group cap as single-step pruning, then removed with :func:`remove_channels`.
``linear`` is Torch-Pruning's ``linear_scheduler``; ``agp`` is the cubic schedule of Zhu & Gupta
(2017), s_t = s_f + (s_i − s_f)(1 − t/k)³ with s_i = 0, in the same form.

Selection at a later round ranks the surviving structures of the *current* (already pruned)
network, and counts what earlier rounds removed toward the target and toward each group's cap
(at most ``max_group_ratio`` of its dense structures, one always kept), as Smooth Pruning's later
rounds do: structures are tracked in the dense model's numbering on a dense skeleton, so MACs are
those of the dense model with every removed structure taken out.

After each removal the optimiser is rebuilt for the new parameters (Torch-Pruning replaces the
``Parameter`` objects) and the surviving slices keep their optimiser state (momentum): the state
is cut with the same channels as the weights, on a copy of the model holding the buffers in
place of the weights. So training goes on as if the removed channels had been masked to zero,
which is what masked gradual pruning (NNI's AGP, SparseML's GMP) does. The learning-rate schedule
continues from the same step (:meth:`~dpm_lab.training.engine.TrainState.replace_optimizer`).

The hook's state is the Torch-Pruning history of every removal so far; a resumed run replays it
on the dense model before the checkpoint's weights load (``on_resume``), so a run interrupted
between rounds ends with the same weights as an uninterrupted one (tested).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner.algorithms.scheduler import linear_scheduler

from ..training.engine import Hook, TrainState, place_model
from ..training.metrics import example_input, macs_params
from .finalize import _plain_history, remove_channels
from .groups import ChannelGroups
from .selection import ChannelRatio, MacsTarget, make_importance, scores, select


def agp_scheduler(pruning_ratio: float, steps: int) -> list[float]:
    """Zhu & Gupta's (2017) automated gradual pruning schedule in Torch-Pruning's scheduler form
    (``steps + 1`` ratios from 0 to ``pruning_ratio``): ``r·(1 − (1 − i/steps)³)``. It prunes
    most in the first rounds, while the network still has redundancy to lose, and little in the
    last ones."""
    return [pruning_ratio * (1 - (1 - i / steps) ** 3) for i in range(steps + 1)]


SCHEDULES = {"linear": linear_scheduler, "agp": agp_scheduler}


def iterative_rounds(k: int, last: int) -> list[int]:
    """The optimiser steps of ``k`` removal rounds spread evenly from step 0 to step ``last``
    (DPM's last selection round: :func:`dpm_lab.experiments.method.selection_rounds`). With k equal
    to the number of DPM's rounds they are DPM's rounds."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"iterative_steps (k) must be an integer >= 1, got {k!r}")
    if k == 1:
        return [0]
    if last < k - 1:
        raise ValueError(f"{k} removal rounds do not fit between step 0 and step {last} (the last "
                         f"selection round of DPM); use at most {last + 1} rounds")
    return [i * last // (k - 1) for i in range(k)]


class IterativePruning(Hook):
    """Remove structures of ``model`` physically at the optimiser steps ``rounds`` (0 = at fit
    start), each round reaching the next point of the ``schedule`` toward ``target``
    (:class:`MacsTarget` or :class:`ChannelRatio`), ranked by ``criterion``.

    ``round_log`` keeps per round its step, the target it aimed at and the MACs kept after it.
    ``history`` is Torch-Pruning's pruning history of every removal so far, in order
    (:func:`dpm_lab.pruning.load_pruned` replays it). A gradient criterion (``taylor``) reads
    ``.grad``: at step 0 the calibration gradients, later the current step's.

    From a custom loop: call ``on_fit_start(state)`` before the first step and
    ``after_step(state)`` after every ``optimizer.step()``; a removal calls
    ``state.replace_optimizer``, so read ``state.optimizer`` afresh after it.
    """

    def __init__(self, model: nn.Module, target: MacsTarget | ChannelRatio, rounds: Sequence[int],
                 criterion: str = "l2", schedule: str = "linear", input_size=(1, 3, 32, 32)):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown pruning schedule {schedule!r}; choose one of: "
                             f"{', '.join(SCHEDULES)}")
        if not isinstance(target, (MacsTarget, ChannelRatio)):
            raise ValueError(f"target must be a MacsTarget or a ChannelRatio, got {target!r}")
        rounds = [int(r) for r in rounds]
        if not rounds or rounds != sorted(set(rounds)) or rounds[0] < 0:
            raise ValueError(f"rounds must be increasing optimiser steps >= 0, got {rounds!r}")
        self.model, self.target, self.rounds, self.input_size = model, target, rounds, input_size
        self.criterion, self.importance, self.schedule = criterion, make_importance(criterion), schedule
        # the dense model's structures, numbered once: what each round counts and caps against
        skeleton = copy.deepcopy(model).cpu()
        for p in skeleton.parameters():
            p.grad = None
        self.dense = ChannelGroups(skeleton, example_input(skeleton, input_size))
        self.dense_macs = macs_params(skeleton, input_size)[0]
        self.removed = torch.zeros(self.dense.num_structures, dtype=torch.bool)
        self.history: list = []
        self.round_log: list[dict] = []

    def ratios(self) -> list[float]:
        """Per round, the scheduled fraction of dense MACs removed (``MacsTarget``) or of each
        group's channels (``ChannelRatio``)."""
        final = 1 - self.target.ratio if isinstance(self.target, MacsTarget) else self.target.ratio
        return SCHEDULES[self.schedule](final, len(self.rounds))[1:]

    def round_target(self, i: int):
        """The target of round ``i``: the schedule's point ``i + 1``."""
        r = self.ratios()[i]
        if isinstance(self.target, MacsTarget):
            return MacsTarget(1 - r, self.target.max_group_ratio)
        return ChannelRatio(r)

    # ---- the hook ----

    def on_fit_start(self, state: TrainState) -> None:
        if self.rounds[0] == 0:
            self.round(0, state)

    def after_step(self, state: TrainState) -> None:
        if state.step + 1 in self.rounds:
            self.round(state.step + 1, state)

    def round(self, step: int, state: TrainState | None = None) -> torch.Tensor:
        """Select and remove this round's structures (dense numbering, returned); with
        ``state``, hand the engine an optimiser for the new parameters."""
        i = self.rounds.index(step)
        model, was_training = self.model, self.model.training
        current = ChannelGroups(model, example_input(model, self.input_size))
        alive = self._alive()
        if ([(g.root, g.size) for g in current.groups]
                != [(g.root, len(a)) for g, a in zip(self.dense.groups, alive)]):
            raise RuntimeError("the model's groups no longer match the structures this pruner "
                               "left; was the model pruned by something else?")
        dense_scores = torch.zeros(self.dense.num_structures)
        dense_scores[torch.cat(alive)] = scores(current, self.criterion, self.importance)
        target = self.round_target(i)
        new = select(self.dense, dense_scores, target, taken=self.removed,
                     input_size=self.input_size, dense_macs=self.dense_macs)
        if len(new):
            position = torch.full((self.dense.num_structures,), -1, dtype=torch.long)
            for g, ids in zip(current.groups, alive):
                position[ids] = g.offset + torch.arange(g.size)
            channels = current.split(position[new])
            carried = _sliced_optimizer_state(model, state.optimizer, channels, self.input_size) \
                if state is not None else {}
            self.history += _plain_history(remove_channels(model, channels, self.input_size))
            self.removed[new] = True
            place_model(model, next(model.parameters()).device)  # the engine's memory format
            if state is not None:
                optimizer = state.build_optimizer()
                for name, p in model.named_parameters():
                    if name in carried:
                        optimizer.state[p] = carried[name]
                state.replace_optimizer(optimizer)
        model.train(was_training)  # tracing the graph left it in eval mode
        macs = macs_params(model, self.input_size)[0]
        self.round_log.append({"step": step, "scheduled_ratio": self.ratios()[i],
                               "target": vars(target).copy(), "selected": len(new),
                               "macs_ratio": macs / self.dense_macs})
        return new

    def _alive(self) -> list[torch.Tensor]:
        """Per dense group, the dense ids of its structures not removed yet (in order: removal
        keeps the order of the channels that stay)."""
        return [torch.arange(g.offset, g.offset + g.size)[~self.removed[g.offset:g.offset + g.size]]
                for g in self.dense.groups]

    def removed_ids(self) -> torch.Tensor:
        """Dense ids of every structure removed so far."""
        return self.removed.nonzero().flatten()

    def state_dict(self) -> dict:
        return {"removed": self.removed, "history": self.history, "round_log": self.round_log}

    def load_state_dict(self, state: dict) -> None:
        self.removed, self.history = state["removed"].clone(), state["history"]
        self.round_log = state["round_log"]

    def on_resume(self, state: TrainState) -> None:
        """Replay the removals so far on the (dense) model, then build the optimiser for its
        parameters; the checkpoint's weights and optimiser state load next."""
        if not self.history:
            return
        model, was_training = self.model, self.model.training
        with torch.enable_grad():
            DG = tp.DependencyGraph().build_dependency(
                model, example_input(model, self.input_size), verbose=False)
        DG.load_pruning_history(self.history)
        model.train(was_training)
        place_model(model, next(model.parameters()).device)
        state.replace_optimizer(state.build_optimizer())


def _sliced_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                            channels: dict[str, list[int]], input_size) -> dict[str, dict]:
    """``{parameter name: optimiser state}`` after removing ``channels``: every state tensor
    shaped like its parameter (momentum, Adam's moments) cut as the parameter will be, by
    removing the same channels from a copy of the model that holds the tensors as its weights;
    other entries (step counts) as they are."""
    states = {n: optimizer.state[p] for n, p in model.named_parameters() if optimizer.state.get(p)}
    shaped = sorted({k for n, s in states.items() for k, v in s.items()
                     if torch.is_tensor(v) and v.shape == model.get_parameter(n).shape})
    out = {n: {k: v for k, v in s.items() if k not in shaped} for n, s in states.items()}
    for key in shaped:
        shadow = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in shadow.named_parameters():
                p.grad = None
                if key in states.get(n, {}):
                    p.copy_(states[n][key])
        remove_channels(shadow, channels, input_size)
        for n, p in shadow.named_parameters():
            if key in states.get(n, {}):
                out[n][key] = p.detach().clone()
    return out

"""``DecayPruner``: DPM with Torch-Pruning's call pattern, inside the user's own training loop.

A Torch-Pruning user builds ``tp.pruner.BasePruner(model, example_inputs, importance=...,
pruning_ratio=..., ignored_layers=..., iterative_steps=k)``, calls ``pruner.step()`` (channels
go at once) and fine-tunes. ``DecayPruner`` takes the same arguments plus ``decay_steps=N`` and
the training steps the rounds are spread over; ``pruner.step()`` goes after every
``optimizer.step()``, and ``pruner.finalize()`` returns the physically pruned model.

What decays is chosen by a Torch-Pruning pruner (built from the same arguments, or the user's
own: :meth:`DecayPruner.from_pruner`) stepping in interactive mode at each selection round, so
``global_pruning``, ``pruning_ratio_dict``, ``round_to``, ``ignored_layers`` and the ratio
scheduler mean exactly what they mean in Torch-Pruning. Nothing is removed during training:
round i takes the channels of the pruner's step i + 1 (its cumulative ratio of the *full*
widths) that are not already held; :class:`~dpm_lab.pruning.SmoothPruning` decays them over N
steps, Self-Rectifying may release some, and later rounds pick replacements. With a MACs target
the round instead takes the first step of a fine ratio grid whose channels meet the round's
MACs budget (as Torch-Pruning's benchmark steps its pruner until the speed-up holds).

During a round the pruner ranks with the user's importance, except that structures already
decaying or pruned rank first (−∞: they are in its cumulative count, as removed channels are in
Torch-Pruning's initial widths) and released ones last (in their own order), so the pruner's
counts stay those of the hard-pruning run and its new channels are the replacements. With N = 1
and no Self-Rectifying the decay zeroes at selection, and the model ``finalize`` returns equals
Torch-Pruning's own pruned model (tested). A group's normaliser (Torch-Pruning's default
``'mean'``, or ``'max'`` or ``'sum'``) is taken over its free channels only
(:class:`~dpm_lab.pruning.selection.FreeNormalized`, as in the core and the DepGraph host), as
hard pruning takes it over the channels it has not removed: held channels, decaying or zero, and
released ones cannot shift the free ones' scores, which matters under global ranking. An
importance whose normaliser cannot be restricted to a subset (``'standarization'``,
``'gaussian'``, ``'lamp'``, a callable) normalises over the whole group, held channels included.
Everything else is the existing machinery: :class:`~dpm_lab.pruning.ChannelGroups`,
``SmoothPruning`` with a ``selector``, :func:`~dpm_lab.pruning.finalize`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner.algorithms.scheduler import linear_scheduler

from ..training.engine import TrainState
from .decay import DECAYING, FREE, PRUNED, RELEASED, SmoothPruning
from .finalize import effective_macs_params, finalize
from .groups import ChannelGroups, output_layer
from .rectify import SelfRectifying
from .selection import FreeNormalized, free_channels

# The ratio grid a MACs target searches (its own pruner: ``pruning_ratio`` MACS_GRID_RATIO over
# MACS_GRID_STEPS steps). Fine enough that one grid step moves the MACs by well under 1 % on the
# CIFAR ResNets; 0.95 leaves every group at least 5 % of its channels, as MacsTarget does.
MACS_GRID_STEPS = 200
MACS_GRID_RATIO = 0.95


class _Steered:
    """The user's importance, with held structures ranked first (−∞) and released ones last:
    their scores are raised by ``lift``, more than any score's range, so they keep their own
    order after every free structure. Everything else keeps its score, so the pruner's ranking
    among free structures is its own."""

    def __init__(self, importance, groups: ChannelGroups, held: torch.Tensor,
                 released: torch.Tensor, lift: float = 0.0):
        self.importance, self.groups = importance, groups
        self.held, self.released, self.lift = held, released, lift

    def __call__(self, group):
        imp = self.importance(group)
        if imp is None:  # Torch-Pruning skips such groups
            return None
        ids = _root_ids(self.groups, group, unique=False)
        imp = imp.clone()
        imp[self.held[ids].to(imp.device)] = float("-inf")
        released = self.released[ids].to(imp.device)
        imp[released] += self.lift
        return imp


def restrictable(importance) -> FreeNormalized | None:
    """``importance`` as :class:`~dpm_lab.pruning.selection.FreeNormalized` (its normaliser taken
    over the free channels a round sets), or ``None`` where its normaliser is not a statistic
    that can be restricted (``'standarization'``, ``'gaussian'``, ``'lamp'``, a sentinel, a
    callable): that importance ranks as given, over the whole group."""
    try:
        return FreeNormalized(importance)
    except ValueError:
        return None


def _root_ids(groups: ChannelGroups, group, unique: bool = True) -> torch.Tensor:
    """Structure id of each root channel of a Torch-Pruning ``group`` (sorted and unique with
    ``unique``)."""
    root = groups.names.get(group[0].dep.target.module, "?")
    meta = next((g for g in groups.groups if g.root == root), None)
    if meta is None:
        raise ValueError(f"the Torch-Pruning pruner chose channels of {root!r}, which roots no "
                         f"group DPM decays (roots: {', '.join(g.root for g in groups.groups)}): "
                         "build the pruner with the same ignored_layers and "
                         "root_module_types=[nn.Conv2d, nn.Linear]")
    ids = meta.offset + meta.position[torch.as_tensor(list(group[0].idxs), dtype=torch.long)]
    return ids.unique() if unique else ids


class PrunerSelector:
    """A Torch-Pruning pruner as :class:`SmoothPruning`'s ``selector`` (see the module docstring).

    Ratio rounds (``target_macs=None``): round r takes the pruner's step r + 1. MACs rounds:
    round r's budget is 1 − (1 − ``target_macs``) · ``fractions[r + 1]`` of the dense MACs
    (``fractions``: the cumulative share of the target per round, k + 1 values from 0 to 1), and
    the round takes the first step of the pruner's schedule whose channels meet it (galloping,
    then bisection: a handful of MACs counts).
    """

    def __init__(self, pruner: tp.pruner.BasePruner, groups: ChannelGroups,
                 target_macs: float | None = None, fractions: Sequence[float] | None = None,
                 input_size=(1, 3, 32, 32)):
        self.pruner, self.groups, self.target_macs = pruner, groups, target_macs
        self.fractions, self.input_size = fractions, input_size
        self.free_normalized = restrictable(pruner.importance)
        self.log: list[dict] = []

    def picks(self, step: int, held: torch.Tensor, released: torch.Tensor) -> torch.Tensor:
        """Bool ``[S]``: what the pruner's ``step`` takes beyond ``held``."""
        importance = self.pruner.importance
        ranked = importance
        if self.free_normalized is not None:  # the normaliser over the free channels alone
            ranked = self.free_normalized
            ranked.free = free_channels(self.groups, ~(held | released))
        self.pruner.current_step = step - 1  # ``step()`` counts it up before ranking
        picked = torch.zeros_like(held)
        try:
            self.pruner.importance = _Steered(ranked, self.groups, held, released,
                                              self._lift(ranked) if released.any() else 0.0)
            for group in self.pruner.step(interactive=True):
                picked[_root_ids(self.groups, group)] = True
        finally:
            self.pruner.importance = importance
            if self.free_normalized is not None:
                self.free_normalized.free = None
        return picked & ~held

    def _lift(self, importance) -> float:
        """2·max|score| + 1 over the pruner's groups: added to a released structure's score, it
        ranks after every other (scores lie in [−max, max])."""
        bound = 0.0
        for group in self.pruner.DG.get_all_groups(ignored_layers=self.pruner.ignored_layers,
                                                   root_module_types=self.pruner.root_module_types):
            imp = importance(group)
            if imp is not None:
                bound = max(bound, float(imp.abs().max()))
        return 2 * bound + 1

    def __call__(self, sp: SmoothPruning, step: int) -> torch.Tensor:
        status = sp.status.cpu()
        held = (status == DECAYING) | (status == PRUNED)
        released = status == RELEASED
        r = len(self.log)
        entry = {"step": step}
        if self.target_macs is None:
            tp_step = min(r + 1, self.pruner.iterative_steps)
            new = self.picks(tp_step, held, released)
        else:
            share = self.fractions[min(r + 1, len(self.fractions) - 1)]
            budget = sp.dense_macs * (1 - (1 - self.target_macs) * share)

            def macs(picked) -> int:
                ids = (held | picked).nonzero().flatten()
                return effective_macs_params(self.groups.model, self.groups.split(ids),
                                             self.input_size)[0]

            # Galloping from step 1: a global ranking can empty a group at high steps, which
            # Torch-Pruning then skips, so the MACs fall monotonically only up to some step.
            lo, hi, new = 0, 1, torch.zeros_like(held)
            if macs(new) > budget:
                while macs(trial := self.picks(hi, held, released)) > budget:
                    if hi == self.pruner.iterative_steps:
                        kept = macs(trial) / sp.dense_macs
                        raise ValueError(f"MACs target {self.target_macs} cannot be met: the "
                                         f"pruner's last step keeps {kept:.3f} of dense MACs")
                    lo, hi = hi, min(2 * hi, self.pruner.iterative_steps)
                new = trial
                while hi - lo > 1:  # macs at lo > budget >= macs at hi
                    mid = (lo + hi) // 2
                    trial = self.picks(mid, held, released)
                    if macs(trial) <= budget:
                        hi, new = mid, trial
                    else:
                        lo = mid
            tp_step = hi if new.any() else self.pruner.current_step
            entry["budget"] = budget / sp.dense_macs
        self.pruner.current_step = tp_step
        entry.update(pruner_step=tp_step, selected=int(new.sum()))
        self.log.append(entry)
        return new.nonzero().flatten()

    def state_dict(self) -> dict:
        return {"log": self.log, "pruner_step": self.pruner.current_step}

    def load_state_dict(self, state: dict) -> None:
        self.log, self.pruner.current_step = state["log"], state["pruner_step"]


def spread_rounds(k: int, decay_steps: int, total_steps: int | None = None,
                  round_steps: Sequence[int] | None = None) -> list[int]:
    """The optimiser steps of ``k`` selection rounds: ``round_steps`` as given, or spread evenly
    from 0 to ``total_steps`` − N, so the last round's channels reach zero by the end."""
    if not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(f"decay_steps (N) must be an integer >= 1, got {decay_steps!r}")
    if round_steps is not None:
        if total_steps is not None:
            raise ValueError("give total_steps (rounds spread evenly) or round_steps (explicit), "
                             "not both")
        rounds = list(round_steps)
        if (not rounds or any(not isinstance(s, int) or s < 0 for s in rounds)
                or rounds != sorted(set(rounds))):
            raise ValueError(f"round_steps must be increasing integer optimiser steps >= 0, "
                             f"got {round_steps!r}")
        return rounds
    if k == 1 and total_steps is None:
        return [0]
    if total_steps is None:
        raise ValueError(f"iterative_steps={k} needs total_steps= (the training steps to spread "
                         "the rounds over) or round_steps=[...]")
    if not isinstance(total_steps, int) or total_steps < decay_steps + k - 1:
        raise ValueError(f"total_steps must be an integer >= decay_steps + iterative_steps - 1 = "
                         f"{decay_steps + k - 1} (every round's channels must reach zero by the "
                         f"end), got {total_steps!r}")
    span = total_steps - decay_steps
    return [0] if k == 1 else [i * span // (k - 1) for i in range(k)]


class DecayPruner:
    """DPM with Torch-Pruning's arguments (module docstring); round 0 selects at construction.

    ``importance``: any Torch-Pruning importance (default ``GroupMagnitudeImportance(p=2)``).
    One target: ``pruning_ratio`` (Torch-Pruning's meaning, with ``global_pruning``,
    ``pruning_ratio_dict``, ``round_to``) or ``target_macs`` (keep at most this fraction of the
    dense MACs). ``ignored_layers``: modules whose groups are left alone (default: the last
    ``nn.Linear``, the classifier; Torch-Pruning's default ignores nothing).
    ``decay_steps``: N. Rounds: ``iterative_steps`` = k, spread over ``total_steps`` training
    steps, or ``round_steps`` (their optimiser steps). ``iterative_pruning_ratio_scheduler``: the
    cumulative ratio (or MACs share) per round, Torch-Pruning's; a constant schedule
    (``lambda r, k: [r] * (k + 1)``) selects the whole target at round 0 and makes later rounds
    replacement rounds, as in the DPM paper. ``self_rectifying``: a
    :class:`~dpm_lab.pruning.SelfRectifying` or ``None``. ``optimizer``: the optimiser whose
    momentum of pruned slices is zeroed; else the one given to the first ``step(optimizer)``.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, importance=None, *,
                 decay_steps: int, pruning_ratio: float | None = None,
                 target_macs: float | None = None, global_pruning: bool = False,
                 ignored_layers: Sequence[nn.Module] | None = None,
                 pruning_ratio_dict: dict | None = None, round_to: int | None = None,
                 iterative_steps: int | None = None, total_steps: int | None = None,
                 round_steps: Sequence[int] | None = None,
                 iterative_pruning_ratio_scheduler: Callable = linear_scheduler,
                 self_rectifying: SelfRectifying | None = None,
                 optimizer: torch.optim.Optimizer | None = None):
        _check_model(model, example_inputs)
        if importance is None:
            importance = tp.importance.GroupMagnitudeImportance(p=2)
        if not callable(importance):
            raise TypeError(f"importance must be a Torch-Pruning importance (callable on a group), "
                            f"e.g. tp.importance.GroupMagnitudeImportance(p=2); got {importance!r}")
        if (pruning_ratio is None) == (target_macs is None):
            raise ValueError(f"give one target: pruning_ratio (fraction of channels) or "
                             f"target_macs (fraction of MACs kept); got pruning_ratio="
                             f"{pruning_ratio!r}, target_macs={target_macs!r}")
        if pruning_ratio is not None and not 0 < pruning_ratio < 1:
            raise ValueError(f"pruning_ratio must be in (0, 1), got {pruning_ratio!r}")
        if target_macs is not None:
            if not 0 < target_macs < 1:
                raise ValueError(f"target_macs (fraction of dense MACs kept) must be in (0, 1), "
                                 f"got {target_macs!r}")
            if pruning_ratio_dict:
                raise ValueError("pruning_ratio_dict sets final channel ratios, which a MACs "
                                 "target decides; give pruning_ratio with it, or build your own "
                                 "pruner and use DecayPruner.from_pruner")
        if not isinstance(global_pruning, bool):
            raise TypeError(f"global_pruning must be True or False, got {global_pruning!r}")
        if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
            raise ValueError(f"round_to must be None or an integer >= 1, got {round_to!r}")
        for key, ratio in (pruning_ratio_dict or {}).items():
            for m in key if isinstance(key, tuple) else (key,):
                _check_member(model, m, "pruning_ratio_dict key")
            if not 0 <= ratio < 1:
                raise ValueError(f"pruning_ratio_dict ratios must be in [0, 1), got {ratio!r}")
        if ignored_layers is None:
            ignored_layers = [output_layer(model)]
        for m in ignored_layers:
            _check_member(model, m, "ignored_layers entry")
        if iterative_steps is None:
            iterative_steps = 1 if round_steps is None else len(round_steps)
        if not isinstance(iterative_steps, int) or iterative_steps < 1:
            raise ValueError(f"iterative_steps must be an integer >= 1, got {iterative_steps!r}")
        if round_steps is not None and len(round_steps) != iterative_steps:
            raise ValueError(f"round_steps has {len(round_steps)} rounds but iterative_steps="
                             f"{iterative_steps}: give one round step per iterative step")
        rounds = spread_rounds(iterative_steps, decay_steps, total_steps, round_steps)
        macs = target_macs is not None
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                model, example_inputs, importance=importance, global_pruning=global_pruning,
                pruning_ratio=MACS_GRID_RATIO if macs else pruning_ratio,
                pruning_ratio_dict=pruning_ratio_dict,
                iterative_steps=MACS_GRID_STEPS if macs else iterative_steps,
                iterative_pruning_ratio_scheduler=(linear_scheduler if macs
                                                   else iterative_pruning_ratio_scheduler),
                ignored_layers=list(ignored_layers), round_to=round_to,
                root_module_types=[nn.Conv2d, nn.Linear])
        fractions = iterative_pruning_ratio_scheduler(1.0, iterative_steps) if macs else None
        self.target = ({"target_macs": target_macs} if macs else
                       {"pruning_ratio": pruning_ratio, "global_pruning": global_pruning})
        self._setup(pruner, example_inputs, decay_steps, rounds, target_macs, fractions,
                    self_rectifying, optimizer)

    @classmethod
    def from_pruner(cls, pruner: tp.pruner.BasePruner, example_inputs: torch.Tensor, *,
                    decay_steps: int, target_macs: float | None = None,
                    iterative_steps: int | None = None, total_steps: int | None = None,
                    round_steps: Sequence[int] | None = None,
                    self_rectifying: SelfRectifying | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> "DecayPruner":
        """DPM on an existing, fresh Torch-Pruning pruner, which chooses what decays: round r
        takes its step r + 1 (its ``pruning_ratio`` and ``iterative_steps``: by default one
        round per step), or, with ``target_macs``, the smallest of its steps that meets the
        round's MACs budget (linear shares over ``iterative_steps`` rounds, default 1). Its
        ``ignored_layers`` are DPM's. ``example_inputs`` again: Torch-Pruning does not keep
        them, and DPM needs them for its groups, the MACs and the removal."""
        if not isinstance(pruner, tp.pruner.BasePruner):
            raise TypeError(f"from_pruner takes a Torch-Pruning pruner (tp.pruner.BasePruner or a "
                            f"subclass), got {type(pruner).__name__}")
        if pruner.current_step != 0:
            raise ValueError(f"the pruner has already stepped {pruner.current_step} times (and "
                             "may have removed channels): pass a fresh pruner, or call "
                             "pruner.reset() on an unpruned model")
        _check_model(pruner.model, example_inputs)
        if target_macs is not None and not 0 < target_macs < 1:
            raise ValueError(f"target_macs (fraction of dense MACs kept) must be in (0, 1), "
                             f"got {target_macs!r}")
        k = iterative_steps or (len(round_steps) if round_steps is not None
                                else pruner.iterative_steps if target_macs is None else 1)
        if target_macs is None and k > pruner.iterative_steps:
            raise ValueError(f"{k} rounds need {k} pruner steps, but the pruner has "
                             f"iterative_steps={pruner.iterative_steps}")
        if round_steps is not None and len(round_steps) != k:
            raise ValueError(f"round_steps has {len(round_steps)} rounds but iterative_steps={k}")
        rounds = spread_rounds(k, decay_steps, total_steps, round_steps)
        self = cls.__new__(cls)
        self.target = ({"target_macs": target_macs} if target_macs is not None else
                       {"pruning_ratio": pruner.pruning_ratio,
                        "global_pruning": pruner.global_pruning})
        fractions = linear_scheduler(1.0, k) if target_macs is not None else None
        self._setup(pruner, example_inputs, decay_steps, rounds, target_macs, fractions,
                    self_rectifying, optimizer)
        return self

    def _setup(self, pruner, example_inputs, decay_steps, rounds, target_macs, fractions,
               self_rectifying, optimizer) -> None:
        if self_rectifying is not None and not isinstance(self_rectifying, SelfRectifying):
            raise TypeError(f"self_rectifying must be dpm_lab.pruning.SelfRectifying(...) or None, "
                            f"got {self_rectifying!r}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {optimizer!r}")
        self.model, self.tp_pruner = pruner.model, pruner
        self.input_size = (1, *example_inputs.shape[1:])  # MACs per image, removal traces
        self.groups = ChannelGroups(self.model, example_inputs,
                                    ignored_layers=list(pruner.ignored_layers))
        self.selector = PrunerSelector(pruner, self.groups, target_macs, fractions, self.input_size)
        self.decay = SmoothPruning(self.groups, None, decay_steps, rounds=rounds,
                                   rectifier=self_rectifying, input_size=self.input_size,
                                   selector=self.selector)
        self.history = None
        self._state = TrainState(self.model, optimizer, None, None, steps_per_epoch=0)
        self.decay.on_fit_start(self._state)  # round 0, before the first optimiser step

    # ---- the user's loop ----

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Call after every ``optimizer.step()``: one decay application, Self-Rectifying, and the
        selection round if one falls here. Counts the steps itself."""
        if self.history is not None:
            raise RuntimeError("this DecayPruner has finalized its model; build a new one")
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"step() takes the torch.optim.Optimizer, got {optimizer!r}")
            self._state.optimizer = optimizer
        if self._state.optimizer is None:
            raise ValueError("DecayPruner needs the optimiser (to zero the momentum of pruned "
                             "channels): DecayPruner(..., optimizer=opt) or pruner.step(opt)")
        self.decay.after_step(self._state)
        self._state.step += 1

    @property
    def current_step(self) -> int:
        """Optimiser steps counted so far."""
        return self._state.step

    def finalize(self) -> nn.Module:
        """Remove every structure that reached zero and return the (same, now smaller) model.
        Raises while some are still decaying. The removal's history: :meth:`pruning_history`."""
        if self.history is None:
            _, self.history = finalize(self.model, self.decay, self.input_size)
        return self.model

    def pruning_history(self):
        """Torch-Pruning's pruning history of :meth:`finalize` (replay it with
        ``DependencyGraph.load_pruning_history`` or :func:`dpm_lab.pruning.load_pruned`)."""
        return self.history

    # ---- what is going on ----

    def counts(self) -> dict[str, int]:
        status = self.decay.status.cpu()
        return {name: int((status == code).sum()) for name, code in
                (("decaying", DECAYING), ("pruned", PRUNED), ("released", RELEASED),
                 ("free", FREE))}

    def summary(self) -> str:
        """What is decaying, pruned and released: totals, then one line per group."""
        sp, status = self.decay, self.decay.status.cpu()
        target = ", ".join(f"{k}={v}" for k, v in self.target.items())
        done = sum(r <= self.current_step for r in sp.rounds)
        c = self.counts()
        lines = [f"DecayPruner({target}, decay_steps={sp.decay_steps}, "
                 f"self_rectifying={'on' if sp.rectifier else 'off'})",
                 f"step {self.current_step}, rounds {sp.rounds} ({done} done), "
                 f"{self.groups.num_structures} structures: " +
                 ", ".join(f"{v} {k}" for k, v in c.items()) +
                 ("" if self.history is None else "; finalized")]
        if self.history is None:
            held = ((status == DECAYING) | (status == PRUNED)).nonzero().flatten()
            macs = effective_macs_params(self.model, self.groups.split(held), self.input_size)[0]
            lines.append(f"MACs once all selected are removed: {macs / sp.dense_macs:.3f} of dense")
        width = max(len(g.root) for g in self.groups.groups)
        lines.append(f"{'group root':<{width}}  structures  decaying  pruned  released")
        for g in self.groups.groups:
            s = status[g.offset:g.offset + g.size]
            lines.append(f"{g.root:<{width}}  {g.size:>10}  {int((s == DECAYING).sum()):>8}  "
                         f"{int((s == PRUNED).sum()):>6}  {int((s == RELEASED).sum()):>8}")
        return "\n".join(lines)

    __repr__ = summary


def _check_model(model, example_inputs) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_inputs, torch.Tensor):
        raise TypeError(f"example_inputs must be one input tensor (batch first, e.g. "
                        f"torch.randn(1, 3, 224, 224)), got {type(example_inputs).__name__}")


def _check_member(model: nn.Module, module, what: str) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{what} must be a layer (nn.Module) of the model, got {module!r}")
    if not any(module is m for m in model.modules()):
        raise ValueError(f"{what} {type(module).__name__} is not a layer of this model")

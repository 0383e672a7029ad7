"""Gate Decorator (You et al., NeurIPS 2019), the DPM paper's third host: its pieces.

**Gated BN.** Every BatchNorm's output is multiplied by a per-channel gate φ. As in the official
code, the BN's γ moves into the gate (φ ← γ, γ frozen at 1) and β is divided by it (β ← β/γ,
clamped to ±10), so ``φ · (x̂ + β/γ) = γ x̂ + β``: folding leaves the network unchanged (exactly,
where |β/γ| ≤ 10). A binary ``mask`` beside the gate is how the host prunes: a masked channel
outputs zero. Melting puts ``φ · mask`` back into γ and β of a plain BatchNorm, exactly, so that
Torch-Pruning removes the masked channels as usual.

**Taylor importance.** Zeroing gate i changes the loss by about ``|φ_i · ∂L/∂φ_i|`` (first-order
Taylor); the host accumulates it per batch over the tick pass, and gates tied by residual
additions (one Torch-Pruning group) share one score, their sum: :class:`GateTaylor`.

**Tick-Tock** (:class:`TickTock`). A tick trains a few steps with the conv weights frozen (the
gates, BN biases and classifier move), accumulating the Taylor scores, then prunes a fraction of
the remaining channels with the lowest score (:class:`TaylorSelector`). A tock, every T ticks,
trains everything with L1 on the gates. This repeats until the MACs reach the target.

**With DPM** (our reading: the DPM authors published no code, and their README's table says only
that with this host DPM "zeroes out masks"): the host's pick is not masked;
its gates decay to zero over N steps (:class:`~dpm_lab.pruning.SmoothPruning` with the gate
slices as its ``entries``) during the following ticks and tocks, and Self-Rectifying reads the
∂L/∂φ the host already computes. A channel is *held* (counts towards the MACs target) from the
moment it is picked, decaying or masked alike, so host and DPM stop at the same tick. Decaying the
conv filter with the gate is the alternative (``decay="gate+filter"``). A tick computes no filter
gradient (the convs are frozen), so its C_len reads the gates' gradient alone: the filters'
``.grad`` is cleared when a tick starts, else it would still hold the last tock's gradient.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from tqdm import tqdm

from ...pruning.decay import DECAYING, PRUNED, RELEASED, SmoothPruning
from ...pruning.finalize import effective_macs_params
from ...pruning.groups import ChannelGroups
from ...training import distributed
from ...training.checkpoint import load_checkpoint, save_checkpoint
from ...training.engine import Hook, TrainState, fit
from ...training.metrics import macs_params

DECAY_SLICES = ("gate", "gate+filter")

BETA_CLAMP = 10.0  # the official code's bound on β/γ when folding


class GatedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` with γ frozen at 1, followed by a per-channel ``gate`` (trainable) and
    ``mask`` (buffer, 1 = kept). A subclass of ``BatchNorm2d``, so Torch-Pruning's graph treats
    it as one (its own parameters, the gate included, are sliced with the channel)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)
        self.gate = nn.Parameter(torch.ones(num_features))
        self.register_buffer("mask", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * (self.gate * self.mask).view(1, -1, 1, 1)

    @classmethod
    def fold(cls, bn: nn.BatchNorm2d) -> "GatedBatchNorm2d":
        """The gated BN computing what ``bn`` computes (see the module docstring)."""
        gbn = cls(bn.num_features, bn.eps, bn.momentum).to(bn.weight.device, bn.weight.dtype)
        with torch.no_grad():
            gbn.running_mean.copy_(bn.running_mean)
            gbn.running_var.copy_(bn.running_var)
            gbn.num_batches_tracked.copy_(bn.num_batches_tracked)
            gbn.gate.copy_(bn.weight)
            safe = torch.where(bn.weight == 0, torch.ones_like(bn.weight), bn.weight)
            gbn.bias.copy_((bn.bias / safe).clamp(-BETA_CLAMP, BETA_CLAMP))
        return gbn

    def melt(self) -> nn.BatchNorm2d:
        """The plain BN computing what this one computes: γ = φ·mask, β = β'·φ·mask."""
        bn = nn.BatchNorm2d(self.num_features, self.eps, self.momentum).to(
            self.gate.device, self.gate.dtype)
        scale = (self.gate * self.mask).detach()
        with torch.no_grad():
            bn.running_mean.copy_(self.running_mean)
            bn.running_var.copy_(self.running_var)
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
            bn.weight.copy_(self.weight * scale)
            bn.bias.copy_(self.bias * scale)
        return bn


def _replace(model: nn.Module, kind: type, make) -> int:
    count = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is kind:
                setattr(module, name, make(child))
                count += 1
    return count


def fold_gates(model: nn.Module) -> nn.Module:
    """Turn every ``BatchNorm2d`` of ``model`` into a :class:`GatedBatchNorm2d` (in place)."""
    if not _replace(model, nn.BatchNorm2d, GatedBatchNorm2d.fold):
        raise ValueError("fold_gates found no nn.BatchNorm2d in the model: Gate Decorator gates "
                         "the BN layers")
    return model


def melt_gates(model: nn.Module) -> nn.Module:
    """Turn every :class:`GatedBatchNorm2d` back into a plain ``BatchNorm2d`` (in place)."""
    _replace(model, GatedBatchNorm2d, GatedBatchNorm2d.melt)
    return model


@torch.no_grad()
def mask_structures(groups: ChannelGroups, structures: torch.Tensor) -> None:
    """The host's hard step: set ``mask = 0`` on every gate of the structures in the bool mask
    ``structures`` (``[S]``), in every gated BN they couple."""
    owner_of = {id(m.gate): m for m in groups.model.modules() if isinstance(m, GatedBatchNorm2d)}
    flag = groups.pad(structures.to(groups.dtype), 0.0)
    for e in groups.entries:
        if id(e.param) in owner_of:
            owner_of[id(e.param)].mask.mul_(1 - flag[e.owner].to(e.param.dtype))


def gates(model: nn.Module) -> list[nn.Parameter]:
    return [m.gate for m in model.modules() if isinstance(m, GatedBatchNorm2d)]


class GateTaylor(Hook):
    """Accumulates the Taylor score ``Σ_batches |φ · ∂L/∂φ|`` of every structure of ``groups``
    (built on the gated model): per gate, summed over the gates a structure couples (residual
    ties). Read :attr:`scores` (``[S]``, on the groups' device); :meth:`reset` between ticks."""

    def __init__(self, groups: ChannelGroups):
        self.groups = groups
        self._gates = {id(p) for p in gates(groups.model)}
        self.entries = [e for e in groups.entries if id(e.param) in self._gates]
        if not self.entries:
            raise ValueError("no gated BN in the groups' model: call fold_gates(model) before "
                             "building ChannelGroups")
        self.reset()

    def reset(self) -> None:
        self.scores = torch.zeros(self.groups.num_structures, dtype=self.groups.dtype,
                                  device=self.entries[0].param.device)

    def accumulate(self) -> None:
        """Add this batch's |φ · ∂L/∂φ| (the gates' ``.grad`` must be filled)."""
        self.scores += self.groups.reduce(
            lambda p: None if p.grad is None else (p * p.grad).abs(), self.entries)

    def before_step(self, state: TrainState) -> None:
        self.accumulate()


def gate_outputs_taylor(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per gated BN, |Σ y_out · ∂L/∂y_out| over batch and positions: the loss change to first
    order of zeroing each channel's whole output. Equal to |φ · ∂L/∂φ| (a check of the gates'
    gradient; used by the tests)."""
    outs = []

    def keep(_module, _inputs, out):
        out.retain_grad()
        outs.append(out)

    handles = [m.register_forward_hook(keep) for m in model.modules()
               if isinstance(m, GatedBatchNorm2d)]
    try:
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    return [(o * o.grad).sum((0, 2, 3)).abs() for o in outs]


def gate_entries(groups: ChannelGroups, decay: str = "gate") -> list:
    """The slices Smooth Pruning decays inside Gate Decorator: the gates (``"gate"``), or the
    gates with the conv filters and their biases (``"gate+filter"``)."""
    if decay not in DECAY_SLICES:
        raise ValueError(f"unknown Gate Decorator decay {decay!r}; choose one of: "
                         f"{', '.join(DECAY_SLICES)}")
    ids = {id(p) for p in gates(groups.model)}
    return [e for e in groups.entries if id(e.param) in ids
            or (decay == "gate+filter" and e.producer and not e.bn)]


def gate_smooth_pruning(groups: ChannelGroups, decay_steps: int, decay: str = "gate",
                        rectifier=None, input_size=(1, 3, 32, 32)) -> SmoothPruning:
    """Smooth Pruning as Gate Decorator + SP/DPM uses it: no rounds of its own (each tick's pick
    comes from :class:`TickTock`, which also closes the release window at the finish), the
    ``decay`` slices of :func:`gate_entries` decaying, ``rectifier`` for DPM."""
    return SmoothPruning(groups, None, decay_steps, rounds=(), rectifier=rectifier,
                         input_size=input_size, selector=lambda pruner, step: [],
                         release_until=2 ** 62, scope=decay, entries=gate_entries(groups, decay))


class GateL1(Hook):
    """The tock's sparsity term λ·Σ|φ|: adds λ·sign(φ) to every gate's gradient."""

    def __init__(self, model: nn.Module, l1: float):
        self.gates, self.l1 = gates(model), l1

    def before_step(self, state: TrainState) -> None:
        for g in self.gates:
            if g.grad is not None:
                g.grad.add_(self.l1 * g.detach().sign())


class TaylorSelector:
    """The host's pick after a tick: ``fraction`` of the not-yet-held structures, lowest
    accumulated Taylor score first, each group keeping at least ``max(1, ⌈min_keep · size⌉)``
    unheld structures (the official ``minimal_ratio``). Held and released structures are never
    picked. Called as a :class:`SmoothPruning` selector, it reads held/released from the pruner."""

    def __init__(self, taylor: GateTaylor, fraction: float, min_keep: float = 0.1):
        if not 0 < fraction < 1:
            raise ValueError(f"prune fraction must be in (0, 1), got {fraction!r}")
        if not 0 <= min_keep < 1:
            raise ValueError(f"min_keep must be in [0, 1), got {min_keep!r}")
        self.taylor, self.fraction = taylor, fraction
        groups = taylor.groups
        sizes = torch.tensor([g.size for g in groups.groups])
        self.keep = torch.clamp_min(torch.ceil(min_keep * sizes).long(), 1)
        self.group_of = groups.group_of.cpu()

    def choose(self, held: torch.Tensor, released: torch.Tensor) -> torch.Tensor:
        held, released = held.cpu(), released.cpu()
        free = ~held
        want = math.ceil(self.fraction * int(free.sum()))
        room = torch.bincount(self.group_of[free], minlength=len(self.keep)) - self.keep
        score = self.taylor.scores.cpu().double()
        order = torch.argsort(torch.where(free & ~released, score, math.inf), stable=True)
        order = order[(free & ~released)[order]]
        g = self.group_of[order]
        # rank of each candidate within its group, in score order: take it while room is left
        onehot = torch.nn.functional.one_hot(g, len(self.keep))
        rank = (onehot.cumsum(0) * onehot).sum(1) - 1
        return order[rank < room[g]][:want]

    def __call__(self, pruner: SmoothPruning, step: int) -> torch.Tensor:
        s = pruner.status
        return self.choose((s == DECAYING) | (s == PRUNED), s == RELEASED)


class _Shifted(Hook):
    """Forwards ``after_step`` to ``hook`` with steps counted over the whole Tick-Tock phase
    (each tick and tock is its own ``fit``, whose steps start at 0)."""

    def __init__(self, hook: Hook, offset: int):
        self.hook, self.offset = hook, offset

    def on_fit_start(self, state):
        self.hook.on_fit_start(replace(state, step=state.step + self.offset))

    def after_step(self, state):
        self.hook.after_step(replace(state, step=state.step + self.offset))


class _TickSet:
    """The first ``batches`` batches of ``loader``'s epoch ``index`` (each tick its own draw)."""

    def __init__(self, loader, batches: int, index: int):
        self.loader, self.batches, self.index = loader, min(batches, len(loader)), index

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(self.index + epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.batches)


class TickTock:
    """Gate Decorator's pruning phase on a gated ``model`` (see :func:`fold_gates`).

    ``recipe``: a :class:`~dpm_lab.hosts.gatedecorator.recipe.GateDecoratorRecipe`. ``sp``: a
    :class:`SmoothPruning` over ``groups`` whose selector is this run's :class:`TaylorSelector`
    (DPM), or ``None`` (the host masks its picks). :meth:`run` ticks until the held channels'
    MACs reach ``recipe.target_macs``, then ``finish_ticks`` more without pruning; each tick's
    MACs, picks and accuracy go to :attr:`log`. ``checkpoint``: a file rewritten after every
    tick, from which an interrupted run resumes to the same result. ``progress=False``: no
    line per tick. ``precision``: what each tick and tock trains in (``fit``'s).
    """

    def __init__(self, model: nn.Module, groups: ChannelGroups, recipe, train_loader,
                 test_loader, input_size, device, seed: int = 0, sp: SmoothPruning | None = None,
                 checkpoint=None, progress: bool | None = None, max_ticks: int = 10_000,
                 precision: str = "fp32"):
        self.model, self.groups, self.recipe, self.sp = model, groups, recipe, sp
        self.train, self.test, self.size, self.device = train_loader, test_loader, input_size, device
        self.seed, self.checkpoint, self.progress, self.max_ticks = seed, checkpoint, progress, max_ticks
        self.precision = precision
        self.taylor = GateTaylor(groups)
        self.selector = TaylorSelector(self.taylor, recipe.prune_fraction, recipe.min_keep)
        if sp is not None:
            if recipe.decay_steps > recipe.finish_ticks * recipe.tick_batches:
                raise ValueError(f"N = {recipe.decay_steps} steps do not fit in the "
                                 f"{recipe.finish_ticks} finishing ticks of {recipe.tick_batches} "
                                 "steps: the last decays would not end")
            sp.selector = self.selector
        self.masked = torch.zeros(groups.num_structures, dtype=torch.bool)
        self.dense_macs = macs_params(melt_gates(copy.deepcopy(model)), input_size)[0]
        self.tick, self.step, self.log = 0, 0, []

    def held(self) -> torch.Tensor:
        """Bool ``[S]``: structures picked and not released (decaying, zero or masked)."""
        if self.sp is None:
            return self.masked.clone()
        return ((self.sp.status == DECAYING) | (self.sp.status == PRUNED)).cpu()

    def macs_ratio(self) -> float:
        """MACs of the network once the held structures are removed, over dense."""
        melted = melt_gates(copy.deepcopy(self.model))
        ids = self.held().nonzero().flatten()
        return effective_macs_params(melted, self.groups.split(ids), self.size)[0] / self.dense_macs

    def _pass(self, cfg, batches: int, hooks: list, frozen: bool, desc: str) -> dict:
        convs = [m.weight for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        for w in convs:
            w.requires_grad_(not frozen)
            if frozen:  # a tick computes no filter gradient, and its optimiser does not clear
                w.grad = None  # the last tock's: Self-Rectifying's C_len would read that one
        if self.sp is not None:
            hooks = hooks + [_Shifted(self.sp, self.step)]
        loader = _TickSet(self.train, batches, self.step)  # each pass its own batches

        def trainable(model, cfg):
            params = [p for p in model.parameters() if p.requires_grad]
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        try:
            history = fit(self.model, loader, self.test, cfg, hooks, device=self.device,
                          seed=self.seed * 100_003 + self.step, progress=False, desc=desc,
                          optimizer_factory=trainable, precision=self.precision)
        finally:
            for w in convs:
                w.requires_grad_(True)
        self.step += len(loader) * cfg.epochs
        return history[-1]

    def run_tick(self, prune: bool = True) -> dict:
        """One tick: train the gates (convs frozen) while the Taylor scores accumulate, then,
        with ``prune``, the host's pick (masked, or handed to Smooth Pruning)."""
        self.taylor.reset()
        last = self._pass(self.recipe.tick, self.recipe.tick_batches, [self.taylor], True, "tick")
        self.tick += 1
        picked = 0
        if prune:
            if self.sp is None:
                ids = self.selector.choose(self.masked, torch.zeros_like(self.masked))
                self.masked[ids] = True
                mask_structures(self.groups, self.masked.to(self.groups.group_of.device))
                picked = len(ids)
            else:
                self.sp.round(self.step)
                picked = self.sp.round_log[-1]["selected"]
            if not picked:
                raise ValueError(f"MACs target {self.recipe.target_macs} not reached: every "
                                 f"group is down to its min_keep ({self.recipe.min_keep})")
        return {"tick": self.tick, "step": self.step, "picked": picked,
                "test_acc": last["test_acc"], "train_loss": last["train_loss"]}

    def _tock(self) -> None:
        tock = self.recipe.tock
        self._pass(tock, len(self.train), [GateL1(self.model, self.recipe.l1)], False, "tock")

    def run(self) -> list[dict]:
        """Tick-Tock to the target, then the finishing ticks; returns :attr:`log` (one entry per
        tick: the MACs ratio once its pick is removed, the pick, the accuracy after the tick)."""
        self._resume()
        r = self.recipe
        ratio = self.log[-1]["macs_ratio"] if self.log else self.macs_ratio()
        while self.tick < self.max_ticks:
            finishing = ratio <= r.target_macs
            if finishing and self.sp is not None:
                self.sp.release_until = min(self.sp.release_until, self.step)
            if finishing and sum(e["finishing"] for e in self.log) >= r.finish_ticks:
                break
            entry = self.run_tick(prune=not finishing)
            entry.update(finishing=finishing, tock=False)
            if not finishing and self.tick % r.tock_every == 0:
                self._tock()
                entry["tock"] = True
            ratio = entry["macs_ratio"] = self.macs_ratio()
            entry["held"] = int(self.held().sum())
            self.log.append(entry)
            if self.progress is not False and distributed.is_main():
                tqdm.write(f"tick {self.tick}{' + tock' if entry['tock'] else ''}: picked "
                           f"{entry['picked']}, MACs {ratio:.3f} of dense, test top-1 "
                           f"{entry['test_acc']:.2f}%")
            self._save()
        else:
            raise ValueError(f"MACs target {r.target_macs} not reached in {self.max_ticks} ticks")
        return self.log

    def _save(self) -> None:
        if self.checkpoint:
            save_checkpoint({"model": self.model.state_dict(), "tick": self.tick,
                             "step": self.step, "log": self.log, "masked": self.masked,
                             "sp": self.sp.state_dict() if self.sp is not None else {},
                             "release_until": getattr(self.sp, "release_until", 0)},
                            self.checkpoint)

    def _resume(self) -> None:
        if not self.checkpoint or not Path(self.checkpoint).exists():
            return
        ck = load_checkpoint(self.checkpoint)
        self.model.load_state_dict(ck["model"])
        self.tick, self.step, self.log, self.masked = ck["tick"], ck["step"], ck["log"], ck["masked"]
        if self.sp is not None:
            self.sp.load_state_dict(ck["sp"])
            self.sp.release_until = ck["release_until"]

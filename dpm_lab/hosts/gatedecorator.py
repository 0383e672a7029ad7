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

The Tick-Tock schedule and the pipeline (``--host gatedecorator``) are not written yet.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine import Hook, TrainState
from ..pruning.groups import ChannelGroups

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

"""Gate Decorator's pieces, in float64: folding BN into gates and melting them back change
nothing, masked channels come out exactly, and the gates' Taylor score is the first-order loss
change of zeroing each channel's output."""
import copy

import torch
import torch.nn as nn

from dpm_lab.hosts.gatedecorator import (GateTaylor, GatedBatchNorm2d, fold_gates, gates,
                                         gate_outputs_taylor, mask_structures, melt_gates)
from dpm_lab.models import get_model
from dpm_lab.pruning import ChannelGroups, remove_channels
from conftest import calibrate_bn

SIZE = (1, 3, 32, 32)


def _resnet():
    torch.manual_seed(0)
    model = get_model("resnet20").double()
    with torch.no_grad():  # γ away from zero, |β/γ| well inside the clamp
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    calibrate_bn(model, SIZE, dtype=torch.float64)
    return model


def _x(n=4, seed=1):
    return torch.randn(n, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_folding_and_melting_leave_the_network_unchanged():
    model = _resnet()
    gated = fold_gates(copy.deepcopy(model))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, GatedBatchNorm2d) for m in gated.modules()) == n_bn
    for mode in ("eval", "train"):
        getattr(model, mode)(), getattr(gated, mode)()
        with torch.no_grad():
            assert (gated(_x()) - model(_x())).abs().max() <= 1e-12
    gated.eval()
    with torch.no_grad():  # gates trained away from γ, some channels masked: melting is exact
        for m in gated.modules():
            if isinstance(m, GatedBatchNorm2d):
                m.gate.mul_(torch.rand_like(m.gate) + 0.5)
                m.mask[: m.num_features // 4] = 0
        before = gated(_x())
        melted = melt_gates(gated).eval()
        assert not any(isinstance(m, GatedBatchNorm2d) for m in melted.modules())
        assert (melted(_x()) - before).abs().max() <= 1e-12


def test_masked_structures_are_removed_exactly_after_melting():
    gated = fold_gates(_resnet()).eval()
    groups = ChannelGroups(gated, _x(1))
    chosen = torch.zeros(groups.num_structures, dtype=torch.bool)
    chosen[torch.arange(0, groups.num_structures, 3)] = True    # every third structure
    mask_structures(groups, chosen)
    with torch.no_grad():
        soft = gated(_x())
    model = melt_gates(gated)
    remove_channels(model, groups.split(chosen.nonzero().flatten()), SIZE)
    with torch.no_grad():
        assert (model.eval()(_x()) - soft).abs().max() <= 1e-9 and soft.abs().max() > 1e-3


def test_taylor_score_is_the_first_order_loss_change_of_each_channel():
    gated = fold_gates(_resnet()).train()
    groups = ChannelGroups(gated, _x(1))
    taylor = GateTaylor(groups)
    per_output = gate_outputs_taylor(gated, _x(8), torch.arange(8) % 10)
    for g, want in zip(gates(gated), per_output):
        assert torch.allclose((g * g.grad).abs(), want, rtol=1e-10, atol=1e-14)
    taylor.accumulate()
    # a structure's score is the sum over the gates it couples (residual ties)
    want = groups.reduce(lambda p: (p * p.grad).abs() if p.grad is not None else None,
                         taylor.entries)
    assert torch.equal(taylor.scores, want) and (taylor.scores > 0).all()
    single = [g for g in groups.groups if g.root.endswith("conv1") and "layer" in g.root][0]
    bn = gated.get_submodule(single.root.replace("conv1", "bn1"))
    ids = torch.arange(single.offset, single.offset + single.size)
    assert torch.allclose(taylor.scores[ids], (bn.gate * bn.gate.grad).abs()[single.position])

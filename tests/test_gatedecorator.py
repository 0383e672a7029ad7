"""Gate Decorator's pieces, in float64: folding BN into gates and melting them back change
nothing, masked channels come out exactly, and the gates' Taylor score is the first-order loss
change of zeroing each channel's output."""
import copy

import pytest
import torch
import torch.nn as nn

from dpm_lab.hosts.gatedecorator.algorithm import (GateTaylor, GatedBatchNorm2d, fold_gates, gates,
                                                   gate_outputs_taylor, mask_structures, melt_gates)
from dpm_lab.pruning import ChannelGroups, remove_channels
from dpm_lab.training.models import get_model
from conftest import Float64Batches, calibrate_bn

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


# ---- Tick-Tock, alone and with Smooth Pruning (float64, generated data) ----

SMALL = (1, 3, 16, 16)  # Tick-Tock tests train on every second pixel: 4x fewer MACs


def _ticktock(N=None, checkpoint=None, max_ticks=10_000, target=0.7, decay="gate",
              rectifier=None):
    from dataclasses import replace

    from dpm_lab.training.data import TensorLoader, synthetic_dataset
    from dpm_lab.hosts.gatedecorator.algorithm import TickTock, gate_smooth_pruning
    from dpm_lab.hosts.gatedecorator.recipe import gatedecorator_recipe

    train, test = synthetic_dataset(n_train=128, n_test=32)
    recipe = replace(gatedecorator_recipe("smoke"), target_macs=target, tick_batches=2,
                     prune_fraction=0.15, tock_every=2, finish_ticks=2, decay_steps=N or 1)
    model = fold_gates(_resnet())
    groups = ChannelGroups(model, _x(1)[..., ::2, ::2])
    sp = None
    if N:
        sp = gate_smooth_pruning(groups, N, decay, rectifier, input_size=SMALL)
    tt = TickTock(model, groups, recipe, Float64Batches(TensorLoader(train, 32, True), stride=2),
                  Float64Batches(TensorLoader(test, 32, False), stride=2), SMALL, "cpu", 0, sp,
                  checkpoint=checkpoint, max_ticks=max_ticks)
    return model, groups, tt


def _removed(model, groups, held):
    melted = melt_gates(model).eval()
    before = melted(_x())
    remove_channels(melted, groups.split(held.nonzero().flatten()), SMALL)
    return melted, before


def test_tick_tock_stops_at_the_first_tick_that_meets_its_macs_target():
    from dpm_lab.training.metrics import macs_params

    model, groups, tt = _ticktock()
    dense_macs = macs_params(melt_gates(copy.deepcopy(model)), SMALL)[0]
    log = tt.run()
    pruning = [e for e in log if not e["finishing"]]
    assert len(pruning) >= 2 and pruning[-1]["macs_ratio"] <= 0.7 < pruning[-2]["macs_ratio"]
    assert [e["tock"] for e in pruning] == [e["tick"] % 2 == 0 for e in pruning]
    assert sum(e["finishing"] for e in log) == 2 and log[-1]["picked"] == 0
    melted, before = _removed(model, groups, tt.held())
    assert macs_params(melted, SMALL)[0] / dense_macs == log[-1]["macs_ratio"]
    assert (melted(_x()) - before).abs().max() <= 1e-12  # masked channels come out exactly


def test_gate_decorator_with_sp_N1_equals_the_host():
    host_model, groups, host = _ticktock()
    sp_model, sp_groups, sp = _ticktock(N=1)
    host_log, sp_log = host.run(), sp.run()
    assert [e["picked"] for e in host_log] == [e["picked"] for e in sp_log]
    assert torch.equal(host.held(), sp.held())
    assert [e["test_acc"] for e in host_log] == [e["test_acc"] for e in sp_log]
    host_net, _ = _removed(host_model, groups, host.held())
    sp_net, _ = _removed(sp_model, sp_groups, sp.held())
    assert (host_net(_x()) - sp_net(_x())).abs().max() <= 1e-10


def test_gate_decorator_with_dpm_zeroes_the_picked_gates_over_N_steps():
    from dpm_lab.pruning import PRUNED

    model, groups, tt = _ticktock(N=3)
    tt.run()
    pruned = tt.sp.status == PRUNED
    assert pruned.any() and torch.equal(pruned, tt.held())
    for e in groups.entries:  # every slice of a pruned structure is exactly zero, gates too
        mine = pruned[e.owner.clamp_max(len(pruned) - 1)] & (e.owner < len(pruned))
        assert e.param.detach().movedim(e.dim, 0)[mine].abs().sum() == 0


def test_gated_smooth_pruning_pins_the_gate_norm_and_leaves_filters_alone():
    from dpm_lab.hosts.gatedecorator.algorithm import gate_entries, gate_smooth_pruning

    model = fold_gates(_resnet())
    groups = ChannelGroups(model, _x(1))
    entries = gate_entries(groups)
    sp = gate_smooth_pruning(groups, 4)
    ids = torch.tensor([0, 5, 40])
    l_init = groups.squared_norms(entries=entries).sqrt()[ids]
    chosen = {id(e) for e in entries}
    filters = [e for e in groups.entries if id(e) not in chosen]
    before = groups.squared_norms(entries=filters)[ids]
    sp.start_decay(ids)
    for n in range(1, 4):
        assert torch.allclose(groups.squared_norms(entries=entries).sqrt()[ids],
                              l_init * (4 - n) / 4, rtol=0, atol=1e-12)
        assert torch.equal(groups.squared_norms(entries=filters)[ids], before)
        sp._apply(None, step=n)
    assert groups.squared_norms()[ids].max() == 0


def test_tick_tock_resumes_to_the_same_result(tmp_path):
    _, _, whole = _ticktock(N=2)
    log = whole.run()
    model, _, cut = _ticktock(N=2, checkpoint=tmp_path / "tt.ckpt", max_ticks=2)
    with pytest.raises(ValueError, match="not reached in 2 ticks"):
        cut.run()
    resumed_model, _, resumed = _ticktock(N=2, checkpoint=tmp_path / "tt.ckpt")
    assert resumed.run() == log
    assert torch.equal(resumed.sp.status, whole.sp.status)
    for a, b in zip(resumed_model.state_dict().values(), whole.model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_gate_decorator_settings_name_the_value():
    from dpm_lab.hosts.gatedecorator.algorithm import TaylorSelector, gate_entries
    from dpm_lab.experiments.runspec import RunSpec, resolve

    model = fold_gates(_resnet())
    groups = ChannelGroups(model, _x(1))
    with pytest.raises(ValueError, match="'filter'"):
        gate_entries(groups, "filter")
    with pytest.raises(ValueError, match="1.5"):
        TaylorSelector(GateTaylor(groups), 1.5)
    with pytest.raises(ValueError, match="decay steps"):
        resolve(RunSpec(host="gatedecorator", method="dpm", profile="smoke", decay_steps=50))
    with pytest.raises(ValueError, match=r"target MACs .*1\.0"):
        resolve(RunSpec(host="gatedecorator", method="dpm", profile="smoke", target_macs=1.0))
    with pytest.raises(ValueError, match="--prune-phase"):
        resolve(RunSpec(host="gatedecorator", method="dpm", profile="smoke", prune_phase=0.5))
    with pytest.raises(ValueError, match="--gate-decay"):
        resolve(RunSpec(host="gatedecorator", method="host", profile="smoke", gate_decay="gate"))


def test_self_rectifying_reads_the_trainable_scale_of_a_gated_bn():
    """In a gated BN, γ is frozen at 1 and the gate φ carries the scale: Self-Rectifying's escape
    rate is the cosine of (−∇, x) over each structure's β and φ, the frozen γ left out (with it,
    the cosine could never reach a release threshold as φ decays)."""
    from dpm_lab.pruning.rectify import radial_cosine

    gated = fold_gates(_resnet()).train()
    groups = ChannelGroups(gated, _x(1))
    torch.nn.functional.cross_entropy(gated(_x(8)), torch.arange(8) % 10).backward()
    got = radial_cosine(groups)
    trainable_bn = [e for e in groups.entries if e.bn and e.param.requires_grad]
    assert {id(e.param) for e in trainable_bn} >= {id(g) for g in gates(gated)}
    for s in range(0, groups.num_structures, 17):       # a plain loop over some structures
        x = torch.cat([e.param.detach().index_select(e.dim, (e.owner == s).nonzero().flatten())
                       for e in trainable_bn])
        g = torch.cat([e.param.grad.index_select(e.dim, (e.owner == s).nonzero().flatten())
                       for e in trainable_bn])
        want = -(g * x).sum() / (g.norm() * x.norm())
        assert got[s] == pytest.approx(float(want), rel=1e-10, abs=1e-12)


def test_self_rectifying_reads_no_stale_filter_gradient_during_ticks():
    """With ``gate+filter``, C_len sums the gradients of the gates and their conv filters. A tick
    freezes the filters, so the step has no filter gradient: C_len must read the gates' alone,
    never the ``.grad`` the last tock left in the filters. Checked at every step of a Tick-Tock
    with tocks between ticks, against C_len over the gates only; in tocks the filters' gradient
    is there and counts."""
    from dpm_lab.hosts.gatedecorator.algorithm import gate_entries
    from dpm_lab.pruning import SelfRectifying

    model, groups, tt = _ticktock(N=3, decay="gate+filter", rectifier=SelfRectifying(window=2))
    rect, convs = tt.sp.rectifier, [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    only_gates = gate_entries(groups, "gate")
    signals, seen = rect.signals, {"tick after a tock": 0, "tock": 0}

    def checked(groups, norm_now, norm_prev, step_len, live, entries=None):
        c_rate, c_len = signals(groups, norm_now, norm_prev, step_len, live, entries)
        _, gates_alone = signals(groups, norm_now, norm_prev, step_len, live, only_gates)
        if convs[0].requires_grad:             # a tock: the filters were trained this step
            assert all(w.grad is not None for w in convs)
            assert not torch.equal(c_len, gates_alone)
            seen["tock"] += 1
        else:
            assert torch.equal(c_len, gates_alone)
            seen["tick after a tock"] += seen["tock"] > 0
        return c_rate, c_len

    rect.signals = checked
    tt.run()
    assert seen["tock"] > 0 and seen["tick after a tock"] > 0

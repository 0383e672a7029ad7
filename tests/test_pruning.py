"""The invariants of Smooth Pruning, Self-Rectifying, selection and removal."""
import copy

import pytest
import torch

from dpm_lab.pruning import (DECAYING, PRUNED, ChannelGroups, ChannelRatio, MacsTarget, NormSample,
                             SelfRectifying, SmoothPruning, effective_macs_params, finalize,
                             load_pruned, make_importance, save_pruned, scores, select,
                             single_step_prune, thin)
from dpm_lab.pruning.norm_sample import sample_steps
from dpm_lab.training.checkpoint import load_checkpoint
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.engine import fit
from dpm_lab.training.metrics import macs_params
from dpm_lab.training.models import get_model, input_size
from conftest import Stepper, calibrate_bn, randomize_bn

NEVER = 10**9  # a selection round that never comes: the test starts decays by hand


def _setup(name="resnet20", seed=0, dtype=torch.float32, **sp):
    torch.manual_seed(seed)
    model = get_model(name)
    randomize_bn(model, seed)
    model.to(dtype)
    groups = ChannelGroups(model, torch.randn(input_size(name), dtype=dtype))
    pruner = SmoothPruning(groups, sp.pop("target", ChannelRatio(0.5)), sp.pop("N", 4),
                           rounds=sp.pop("rounds", [NEVER]), **sp)
    return model, groups, pruner


def _structure_slices(groups, s):
    """Every parameter slice of structure ``s`` (reference: a plain loop)."""
    out = []
    for e in groups.entries:
        idx = (e.owner == s).nonzero().flatten()
        if len(idx):
            out.append(e.param.detach().index_select(e.dim, idx))
    return out


def _norm(groups, s):
    return torch.sqrt(sum(t.pow(2).sum() for t in _structure_slices(groups, s)))


def test_vectorised_norms_match_a_plain_loop():
    _, groups, _ = _setup(dtype=torch.float64)
    fast = groups.squared_norms().sqrt()
    assert fast.dtype == torch.float64
    for s in [0, 5, groups.groups[3].offset + 2, groups.num_structures - 1]:
        assert fast[s] == pytest.approx(_norm(groups, s).item(), rel=1e-12)


def test_groups_cover_out_bn_and_consumer_slices():
    _, groups, _ = _setup()
    g = next(g for g in groups.groups if g.root == "layer1.0.conv1")
    assert set(g.members) == {"layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"}
    assert len(groups.groups) == 12  # 9 block-internal + 3 residual stages, fc ignored


def _block_group_ids(groups, root="layer2.1.conv1", k=3):
    g = next(g for g in groups.groups if g.root == root)
    return torch.arange(g.offset, g.offset + k)


def test_norm_follows_schedule_and_reaches_exact_zero_at_N():
    model, groups, pruner = _setup(N=4, dtype=torch.float64)
    run = Stepper(model, dtype=torch.float64)
    ids = _block_group_ids(groups)
    l_init = pruner.norms()[ids].clone()
    pruner.start_decay(ids, run.opt)  # application 1 at selection
    norms = [pruner.norms()[ids].clone()]
    for _ in range(3):                # applications 2..4 after the next optimiser steps
        run.step(pruner)
        norms.append(pruner.norms()[ids].clone())
    for n, got in enumerate(norms, start=1):
        assert torch.allclose(got, l_init * (4 - n) / 4, rtol=1e-12, atol=0), n
    assert all((t == 0).all() for s in ids for t in _structure_slices(groups, s))
    assert (pruner.status[ids] == PRUNED).all()


def _traced(pruner, sample, steps):
    """``sample`` after ``steps`` float64 training steps of ``pruner``'s model, hooked after it."""
    run = Stepper(pruner.groups.model, dtype=torch.float64)
    for hook in (pruner, sample):
        hook.on_fit_start(run.state)
    for _ in range(steps):
        run.step(pruner)
        sample.after_step(run.state)
    return sample


@pytest.mark.parametrize("N", [1, 4])
def test_norm_sample_records_the_schedule_exactly(N):
    """The record a run keeps of the first round: chosen structures at (N − n)/N of L_init, then
    exactly zero; free ones untouched by the decay; 2N + 1 rows. float64, so exact to rounding."""
    _, _, pruner = _setup(N=N, dtype=torch.float64, rounds=[0])
    sample = _traced(pruner, NormSample(pruner, k=5), steps=3 * N)
    rec = sample.record()
    assert rec["role"].count("free") == 5 and rec["role"].count("chosen") == 5
    schedule = torch.tensor([max(N - n, 0) / N for n in range(2 * N + 1)], dtype=torch.float64)
    for role, rel, sid, l_init in zip(rec["role"], rec["relative"], rec["structures"],
                                      rec["l_init"]):
        assert len(rel) == 2 * N + 1
        if role == "chosen":
            assert pruner.status[sid] == PRUNED
            assert torch.allclose(torch.tensor(rel, dtype=torch.float64), schedule, atol=1e-5)
            assert rel[N:] == [0.0] * (N + 1)           # exactly zero from the N-th application
            assert l_init == pytest.approx(float(pruner.l_init[sid]), rel=1e-12)
        else:
            assert pruner.status[sid] == 0 and rel[0] == 1.0 and min(rel) > 0


def test_norm_sample_record_is_bounded_whatever_n_and_releases():
    """A record keeps at most k released structures and ``points`` decay applications (0, N, 2N
    among them), however long N and however many Self-Rectifying released: the bounded record is
    the unbounded one thinned, and thinning again changes nothing."""
    N = 6
    _, _, pruner = _setup(N=N, dtype=torch.float64, rounds=[0], release_until=NEVER,
                          rectifier=SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"),
                                                   window=2))   # releases every decaying one
    sample = _traced(pruner, NormSample(pruner, k=2, points=5), steps=3 * N)
    bounded = sample.record()
    sample.k, sample.points = 10**6, 10**6
    full = sample.record()
    released = full["role"].count("released")
    assert released > 2 and full["steps"] == list(range(2 * N + 1))
    assert bounded == thin(full, k=2, points=5) and thin(bounded, k=2, points=5) == bounded
    assert bounded["role"].count("released") == 2 and bounded["released_total"] == released
    assert bounded["steps"] == sample_steps(N, 5) and {0, N, 2 * N} <= set(bounded["steps"])
    assert len(bounded["steps"]) <= 5 and all(len(r) == len(bounded["steps"])
                                              for r in bounded["relative"])
    for sid, rel in zip(bounded["structures"], bounded["relative"]):   # the same numbers, fewer
        i = full["structures"].index(sid)
        assert rel == [full["relative"][i][n] for n in bounded["steps"]]


@pytest.mark.parametrize("points", [0, 2])
def test_norm_sample_refuses_too_few_points(points):
    _, _, pruner = _setup()
    with pytest.raises(ValueError, match=f"points must be >= 3.*got {points}"):
        NormSample(pruner, points=points)


@pytest.mark.parametrize("scope", ["producer", "group"])
def test_structures_that_share_entries_follow_the_schedule(scope):
    """layer1.0.conv2's weight W[r, c]: row r belongs to the stage-1 residual group, column c to
    layer1.0.conv1's group. Decaying both together, the producer scope scales every entry by one
    owner and both follow (N − n)/N · L_init exactly; the whole-group scope scales the shared
    entries twice and drags both structures below the schedule (the earlier defect)."""
    model, groups, pruner = _setup(N=4, dtype=torch.float64, scope=scope)
    run = Stepper(model, dtype=torch.float64)
    rows = _block_group_ids(groups, "conv1", k=4)            # the stage-1 residual group
    cols = _block_group_ids(groups, "layer1.0.conv1", k=4)
    w = model.get_submodule("layer1.0.conv2").weight
    assert {int(e.owner[0]) for e in groups.entries if e.param is w} == {int(rows[0]), int(cols[0])}
    ids = torch.cat([rows, cols])
    l_init = pruner.norms()[ids].clone()
    pruner.start_decay(ids, run.opt)
    gaps = []
    for n in range(2, 4):
        run.step(pruner)
        gaps.append((pruner.norms()[ids] - l_init * (4 - n) / 4).abs().max().item())
    if scope == "producer":
        assert max(gaps) <= 1e-12 * l_init.max().item()
    else:
        assert min(gaps) > 1e-3 * l_init.min().item()
    run.step(pruner)
    assert (pruner.status[ids] == PRUNED).all()
    assert all((t == 0).all() for s in ids for t in _structure_slices(groups, s))


def test_no_revival_by_momentum_or_weight_decay():
    model, groups, pruner = _setup(N=2)
    run = Stepper(model, momentum=0.9, weight_decay=5e-3)
    ids = _block_group_ids(groups)
    for _ in range(3):  # build up momentum first
        run.step()
    pruner.start_decay(ids, run.opt)
    for _ in range(8):
        run.step(pruner)
    for s in ids:
        assert all((t == 0).all() for t in _structure_slices(groups, s))
    for e in groups.entries:  # the momentum buffers of zeroed slices are zero too
        idx = torch.isin(e.owner, ids).nonzero().flatten()
        if len(idx):
            buf = run.opt.state[e.param]["momentum_buffer"]
            assert (buf.index_select(e.dim, idx) == 0).all()


def test_groups_selected_at_different_times_decay_independently():
    model, groups, pruner = _setup(N=4, dtype=torch.float64)
    run = Stepper(model, dtype=torch.float64)
    a = _block_group_ids(groups, "layer1.0.conv1")
    b = _block_group_ids(groups, "layer3.0.conv1")
    pruner.start_decay(a, run.opt)
    run.step(pruner)
    run.step(pruner)
    b_init = pruner.norms()[b].clone()
    pruner.start_decay(b, run.opt)
    run.step(pruner)  # a: 4th application -> zero; b: 2nd
    assert (pruner.status[a] == PRUNED).all() and (pruner.status[b] == DECAYING).all()
    assert torch.allclose(pruner.norms()[b], b_init * 2 / 4, rtol=1e-12, atol=0)
    run.step(pruner)
    run.step(pruner)
    assert (pruner.status[b] == PRUNED).all()


def test_N_equal_1_reproduces_single_step_pruning():
    """SP with N = 1 zeroes the selection at its first round; training the soft-zeroed network
    must then match training the physically pruned one step for step (same selection, same
    updates: a zeroed channel contributes exact zeros, and its weights and momentum are
    re-zeroed after every step). In float64 the only difference, the order of summing those
    zeros, stays at rounding level through several steps of BN training."""
    torch.manual_seed(0)
    dense = get_model("resnet20")
    randomize_bn(dense)
    dense.double()
    target = MacsTarget(0.5)

    hard = copy.deepcopy(dense)
    _, _, hard_ids = single_step_prune(hard, target, input_size=(1, 3, 32, 32))
    hard_run = Stepper(hard, dtype=torch.float64, seed=7)

    soft = copy.deepcopy(dense)
    sp = SmoothPruning(ChannelGroups(soft, torch.randn(1, 3, 32, 32).double()), target,
                       decay_steps=1, rounds=[0])
    soft_run = Stepper(soft, dtype=torch.float64, seed=7)
    sp.on_fit_start(soft_run.state)
    assert torch.equal(sp.pruned_ids(), torch.sort(hard_ids).values)
    for _ in range(5):
        hard_run.step()
        soft_run.step(sp)
    finalize(soft, sp)
    assert [p.shape for p in hard.parameters()] == [p.shape for p in soft.parameters()]
    worst = max((a - b).abs().max().item() for a, b in zip(hard.state_dict().values(),
                                                            soft.state_dict().values()))
    assert worst <= 1e-10, worst
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert (hard.eval()(x) - soft.eval()(x)).abs().max() <= 1e-10


@pytest.mark.parametrize("name", ["resnet56", "vgg16_bn", "resnet50"])
def test_removing_zeroed_channels_keeps_outputs(name):
    """Exact in exact arithmetic; in float64 the outputs agree to rounding (~1e-15 measured)."""
    model, groups, pruner = _setup(name, N=1, target=ChannelRatio(0.3))
    model.double()
    pruner.round(0)  # N = 1: selected structures are zero at once
    size = input_size(name)
    calibrate_bn(model, size, dtype=torch.float64)
    x = torch.randn(2, *size[1:], dtype=torch.float64)
    with torch.no_grad():
        soft = model(x)
    macs_eff = effective_macs_params(model, groups.split(pruner.pruned_ids()), size)
    finalize(model, pruner, size)
    with torch.no_grad():
        hard = model(x)
    assert soft.abs().max() > 0.1                       # a real signal, not a vanishing one
    assert (hard - soft).abs().max() <= 1e-10
    assert macs_params(model, size) == macs_eff


def test_finalize_refuses_while_decaying_and_history_reloads(tmp_path):
    model, groups, pruner = _setup(N=3)
    run = Stepper(model)
    pruner.start_decay(_block_group_ids(groups), run.opt)
    with pytest.raises(RuntimeError, match="still decaying"):
        finalize(model, pruner)
    run.step(pruner)
    run.step(pruner)
    model, history = finalize(model, pruner)
    save_pruned(tmp_path / "m.pt", model, history)
    fresh = load_pruned(tmp_path / "m.pt", get_model("resnet20"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_selection_targets():
    model, groups, _ = _setup()
    scores = groups.importance(make_importance("l2"))
    ids = select(groups, scores, ChannelRatio(0.5))
    for g in groups.groups:  # exactly floor(0.5 * size) per group, the lowest scores
        mine = ids[(ids >= g.offset) & (ids < g.offset + g.size)]
        assert len(mine) == g.size // 2
        rest = torch.tensor([s for s in range(g.offset, g.offset + g.size) if s not in mine])
        assert scores[mine].max() <= scores[rest].min()
    dense = macs_params(model)[0]
    ids = select(groups, scores, MacsTarget(0.4), dense_macs=dense)
    assert len(ids) and effective_macs_params(model, groups.split(ids))[0] <= 0.4 * dense
    # minimal: without the last structure of the ranking (the highest-scoring one selected),
    # the target would be missed
    last = ids[scores[ids].argmax()]
    fewer = ids[ids != last]
    assert effective_macs_params(model, groups.split(fewer))[0] > 0.4 * dense


def test_bad_parameters_name_the_value():
    with pytest.raises(ValueError, match="1.5"):
        MacsTarget(1.5)
    with pytest.raises(ValueError, match="'any-of'"):
        SelfRectifying(rule="any-of")
    with pytest.raises(ValueError, match="0"):
        _setup(N=0)
    with pytest.raises(ValueError, match="'magnitude'"):
        make_importance("magnitude")


def test_self_rectifying_releases_are_logged_and_target_still_met(loaders):
    train, test = loaders  # 4 steps per epoch
    torch.manual_seed(0)
    model = get_model("resnet20")
    groups = ChannelGroups(model, torch.randn(1, 3, 32, 32))
    # Thresholds that release every decaying structure once its window is full: the hardest case
    # for keeping the target. Releases stop at the last round (step 6), which selects replacements.
    sr = SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"), window=1)
    dpm = SmoothPruning(groups, MacsTarget(0.5), decay_steps=3, rounds=[0, 3, 6], rectifier=sr)
    fit(model, train, test, TrainConfig(epochs=3, lr=0.02), hooks=[dpm], seed=0, progress=False)
    log = dpm.release_log
    assert len(log) > 0 and {"step", "group", "channel", "c_rate", "c_len"} <= set(log[0])
    assert all(r["step"] < 6 for r in log)
    released = dpm.released_ids()
    assert len(released) > 0 and not set(released.tolist()) & set(dpm.pruned_ids().tolist())
    for s in released[:5]:  # a released structure keeps (non-zero) weights
        assert _norm(groups, int(s)) > 0
    assert [r["selected"] > 0 for r in dpm.round_log] == [True, True, True]
    dense = dpm.dense_macs
    finalize(model, dpm)
    assert macs_params(model)[0] <= 0.5 * dense


def test_pruning_hook_state_survives_resume(loaders, tmp_path):
    train, test = loaders
    from test_engine import Interrupt

    def run(ck, interrupt):
        torch.manual_seed(0)
        m = get_model("resnet20")
        # thresholds that release every decaying structure once its window is full, so that
        # the release log and the rectifier's moving averages must survive the interruption
        sp = SmoothPruning(ChannelGroups(m, torch.randn(1, 3, 32, 32)), MacsTarget(0.6),
                           decay_steps=5, rounds=[0, 4, 8],
                           rectifier=SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"),
                                                    window=2))
        sample = NormSample(sp, k=3)  # its window (2N + 1 = 11 rows) spans the interruption
        hooks = [sp, sample] + ([Interrupt(1)] if interrupt else [Interrupt(-1)])
        fit(m, train, test, TrainConfig(epochs=3, lr=0.02), hooks=hooks, checkpoint=ck,
            resume=True, seed=0, progress=False)
        return m, sp, sample.record()

    full, sp_full, sample_full = run(tmp_path / "a.ckpt", False)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt", True)
    assert load_checkpoint(tmp_path / "b.ckpt")["epoch"] == 1  # resumes mid-run
    resumed, sp_res, sample_res = run(tmp_path / "b.ckpt", False)
    assert "released" in sample_full["role"] and sample_full == sample_res
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(sp_full.status, sp_res.status)
    assert len(sp_full.release_log) > 0
    assert any(r["step"] >= 4 for r in sp_full.release_log)  # releases after the interruption
    assert sp_full.release_log == sp_res.release_log


def test_taylor_needs_gradients_and_calibration_provides_them(loaders):
    from dpm_lab.pruning import accumulate_gradients, scores
    train, _ = loaders
    model, groups, _ = _setup()
    with pytest.raises(ValueError, match="accumulate_gradients"):
        scores(groups, "taylor")
    with pytest.raises(ValueError, match="'taylor'"):
        single_step_prune(copy.deepcopy(model), MacsTarget(0.5), "taylor")
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    accumulate_gradients(model, train, batches=2)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # BN stats kept
    taylor = scores(groups, "taylor")
    assert taylor.abs().sum() > 0 and not torch.allclose(taylor, scores(groups, "l2"))


def test_self_rectifying_without_a_release_window_is_refused():
    with pytest.raises(ValueError, match="could never release"):
        _setup(rounds=[0], rectifier=SelfRectifying())
    _setup(rounds=[0, 10], rectifier=SelfRectifying(window=3))  # a later round: releases possible


def test_a_selector_and_a_target_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        _setup(target=MacsTarget(0.5), selector=lambda pruner, step: [])


def test_inverse_l2_selects_the_largest_structures_first():
    model, groups, _ = _setup()
    l2 = scores(groups, "l2")
    inverse = select(groups, scores(groups, "inverse_l2"), ChannelRatio(0.5))
    normal = select(groups, l2, ChannelRatio(0.5))
    assert not set(inverse.tolist()) & set(normal.tolist())   # exactly the other half
    assert l2[inverse].mean() > l2[normal].mean()


def test_recorded_signals_are_summarised_for_decaying_and_never_selected(loaders):
    train, test = loaders
    torch.manual_seed(0)
    model = get_model("resnet20")
    sr = SelfRectifying(window=2, record=True, rate_reference="gradient")
    dpm = SmoothPruning(ChannelGroups(model, torch.randn(1, 3, 32, 32)), MacsTarget(0.6),
                        decay_steps=4, rounds=[0, 4, 8], rectifier=sr)
    fit(model, train, test, TrainConfig(epochs=3, lr=0.02), hooks=[dpm], seed=0, progress=False)
    summary = sr.signal_summary(dpm.status)
    assert summary["decaying"]["n"] > 0 and summary["never_selected"]["n"] > 0
    for part in ("decaying", "never_selected"):
        lo, mid, hi = summary[part]["c_rate"]
        assert -1 <= lo <= mid <= hi <= 1                   # the gradient C_rate is a cosine
        assert summary[part]["c_len"][0] >= 0

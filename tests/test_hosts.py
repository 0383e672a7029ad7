"""The host frameworks: DepGraph (Torch-Pruning group_sl) and OTOv2 (DHSPG), alone and with DPM."""
import copy

import pytest
import torch
import torch.nn as nn

from dpm_lab.hosts.depgraph.algorithm import (ProgressiveSelector, SparseLearning, make_pruner,
                                              progressive_prune)
from dpm_lab.hosts.otov2.algorithm import DHSPG, pruned_groups
from dpm_lab.pruning import (DECAYING, PRUNED, RELEASED, ChannelGroups, SelfRectifying,
                             SmoothPruning, effective_macs_params, finalize, remove_channels)
from dpm_lab.training.checkpoint import load_checkpoint, save_checkpoint
from dpm_lab.training.metrics import macs_params
from dpm_lab.training.models import get_model, input_size
from conftest import calibrate_bn, randomize_bn

SIZE = input_size("resnet20")


def _resnet20(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = get_model("resnet20")
    randomize_bn(model, seed)
    return model.to(dtype)


# ---- DepGraph ----

def test_depgraph_host_reaches_the_speedup_target():
    model = _resnet20()
    info = progressive_prune(make_pruner(model, SIZE), model, 2.0, SIZE)
    dense, pruned = info["dense_macs"], macs_params(model, SIZE)[0]
    assert dense / pruned >= 2.0 and info["macs"] == pruned
    assert 0 < info["steps"] < 400


def test_sparse_learning_hook_adds_the_group_penalty_to_gradients():
    model = _resnet20()
    x, y = torch.randn(4, *SIZE[1:]), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    SparseLearning(make_pruner(model, SIZE, reg=1e-2)).before_step(type("S", (), {"model": model}))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.grad, before[n])]
    assert any("conv" in n for n in changed) and any("bn" in n for n in changed)
    assert "fc.bias" not in changed  # the output layer is ignored


@pytest.mark.parametrize("rounds", [1, 3])
def test_depgraph_with_sp_N1_equals_the_hosts_progressive_removal(rounds):
    """Same pruner steps, same channels, same shapes and (float64) the same outputs."""
    model = _resnet20(dtype=torch.float64)
    host, soft = copy.deepcopy(model), copy.deepcopy(model)
    info = progressive_prune(make_pruner(host, SIZE), host, 2.0, SIZE)
    groups = ChannelGroups(soft, torch.randn(SIZE, dtype=torch.float64))
    selector = ProgressiveSelector(make_pruner(soft, SIZE), groups, 2.0, rounds, SIZE)
    sp = SmoothPruning(groups, None, 1, rounds=list(range(rounds)), selector=selector,
                       input_size=SIZE)
    for r in range(rounds):
        sp.round(r)
    assert selector.log[-1]["pruner_steps"] > 0
    assert sum(e["pruner_steps"] for e in selector.log) == info["steps"]
    soft, _ = finalize(soft, sp, SIZE)
    assert [p.shape for p in soft.parameters()] == [p.shape for p in host.parameters()]
    host.eval(), soft.eval()
    x = torch.randn(8, *SIZE[1:], dtype=torch.float64)
    with torch.no_grad():
        assert (soft(x) - host(x)).abs().max() <= 1e-12


def test_depgraph_rounds_meet_their_budgets_and_the_last_meets_the_target():
    model = _resnet20()
    groups = ChannelGroups(model, torch.randn(SIZE))
    selector = ProgressiveSelector(make_pruner(model, SIZE), groups, 2.0, 3, SIZE)
    sp = SmoothPruning(groups, None, 4, rounds=[0, 1, 2], selector=selector, input_size=SIZE)
    for r in range(3):
        sp.round(r)
    budgets = [e["budget"] for e in selector.log]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == pytest.approx(0.5)
    assert all(e["macs_ratio"] <= e["budget"] for e in selector.log)
    held = sp.decaying_ids()
    macs = effective_macs_params(model, groups.split(held), SIZE)[0]
    assert macs <= 0.5 * macs_params(model, SIZE)[0]


def test_a_round_that_misses_its_budget_restores_weights_and_free_mask():
    """A pruner of 4 steps cannot reach a 100x speed-up: the round raises, and leaves neither its
    provisional zeros in the model nor its free-channel mask on the importance."""
    model = _resnet20()
    before = copy.deepcopy(model.state_dict())
    groups = ChannelGroups(model, torch.randn(SIZE))
    selector = ProgressiveSelector(make_pruner(model, SIZE, iterative_steps=4), groups, 100.0,
                                   1, SIZE)
    sp = SmoothPruning(groups, None, 4, rounds=[0], selector=selector, input_size=SIZE)
    with pytest.raises(ValueError, match="MACs budget 0.010 of dense not reached after 4"):
        sp.round(0)
    assert selector.pruner.current_step == 4            # it did step (and zero) before giving up
    assert selector.pruner.importance.free is None
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


# ---- OTOv2 / DHSPG ----

class TinyNet(nn.Module):
    """Two conv-BN-ReLU layers and a classifier: 32 zero-invariant groups."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


TINY = (1, 3, 8, 8)


def _dhspg_run(steps=150, decay_N=None, rectifier=None, seed=0, release_until=None, **kw):
    torch.manual_seed(seed)
    model = TinyNet()
    groups = ChannelGroups(model, torch.randn(TINY), consumers=False)
    sp = None
    if decay_N:
        sp = SmoothPruning(groups, None, decay_N, rounds=(), rectifier=rectifier,
                           input_size=TINY, release_until=release_until or steps // 2)
    opt = DHSPG(model.parameters(), groups, **{**dict(lr=0.1, target_sparsity=0.5, lmbda=0.5,
                                                      epsilon=0.9, start_step=10, seed=seed,
                                                      decay=sp), **kw})
    g = torch.Generator().manual_seed(seed)
    state = type("S", (), {"optimizer": opt, "step": 0})()
    if sp:
        sp.on_fit_start(state)
    for t in range(steps):
        x, y = torch.randn(16, *TINY[1:], generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        state.step = t
        if sp:
            sp.after_step(state)
    return model, groups, opt, sp


def test_dhspg_reaches_its_target_group_sparsity_with_exact_zeros():
    model, groups, opt, _ = _dhspg_run()
    zero = groups.squared_norms() == 0
    assert opt.num_target == 16
    assert int(zero.sum()) == opt.num_target           # reached, and capped at the target
    assert torch.equal(zero, opt.zero)                 # exactly the projected groups
    assert bool(opt.redundant[zero].all())             # only from the redundant set G_p


def test_dhspg_zero_groups_are_removed_with_identical_outputs():
    model, groups, opt, _ = _dhspg_run()
    model.double().eval()
    calibrate_bn(model, TINY, dtype=torch.float64)
    x = torch.randn(8, *TINY[1:], dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        remove_channels(model, groups.split(pruned_groups(opt)), TINY)
        after = model(x)
    assert (before - after).abs().max() <= 1e-12
    assert sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)) == 16


def test_dhspg_with_sp_N1_equals_the_projection():
    native, _, opt_a, _ = _dhspg_run()
    soft, _, opt_b, sp = _dhspg_run(decay_N=1)
    assert torch.equal(pruned_groups(opt_a), pruned_groups(opt_b))
    for p, q in zip(native.parameters(), soft.parameters()):
        assert torch.equal(p, q)


def test_dhspg_with_dpm_decays_over_N_steps_then_holds_the_target():
    # thresholds that release every decaying group once its window is full, until step 30:
    # the target must still be met, by the groups DHSPG projects in their place
    sr = SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"), window=3)
    model, groups, opt, sp = _dhspg_run(steps=200, decay_N=20, rectifier=sr, release_until=30)
    assert len(sp.release_log) > 0 and len(sp.released_ids()) > 0
    assert all(r["step"] < 30 for r in sp.release_log)  # only before release_until
    pruned = sp.status == PRUNED
    assert int(pruned.sum()) == opt.num_target
    assert not (pruned & (sp.status == RELEASED)).any()
    assert bool((groups.squared_norms()[pruned] == 0).all())
    assert len(sp.decaying_ids()) == 0               # every decay started has finished
    model.double().eval()
    calibrate_bn(model, TINY, dtype=torch.float64)
    x = torch.randn(8, *TINY[1:], dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        finalize(model, sp, TINY)
        assert (before - model(x)).abs().max() <= 1e-12


def _release_three(released):
    _, groups, opt, sp = _dhspg_run(steps=12, decay_N=20, rectifier=SelfRectifying(window=3),
                                    released=released)
    size = int(opt.redundant.sum())
    assert size == opt.num_redundant
    victims = (opt.redundant & ~sp.committed()).nonzero().flatten()[:3]
    sp.status[victims] = RELEASED                      # as Self-Rectifying would
    xx = groups.squared_norms()
    d = {p: torch.randn_like(p) for p in opt.groups.model.parameters()}
    xd = groups.reduce(lambda p: p * d[p])
    dd = groups.reduce(lambda p: d[p].pow(2))
    before = opt.redundant.clone()
    opt._drop_released(xx, xd, dd, sp.committed())
    return opt, sp, victims, before, (xx, xd, dd), size


def test_dhspg_released_groups_replace_option():
    opt, sp, victims, before, (xx, xd, dd), size = _release_three("replace")
    assert int(opt.redundant.sum()) == size and not opt.redundant[victims].any()
    added = opt.redundant & ~before
    assert int(added.sum()) == 3                       # exactly the released ones are replaced,
    free = ~before & ~sp.committed() & (sp.status != RELEASED)
    score = opt._score(xx, xd, dd)                     # by the best-scoring free groups
    assert score[added].min() >= score[free & ~added].max()


def test_dhspg_released_groups_leave_option():
    opt, _, victims, before, _, size = _release_three("leave")
    assert int(opt.redundant.sum()) == size - 3 and not opt.redundant[victims].any()
    assert not (opt.redundant & ~before).any()


def test_dhspg_released_groups_stay_and_can_be_projected_again():
    _, groups, opt, sp = _dhspg_run(steps=12, decay_N=20, rectifier=SelfRectifying(window=3))
    g = int((opt.redundant & ~sp.committed()).nonzero()[0])
    sp.status[g] = RELEASED
    mask = torch.zeros_like(sp.pending)
    mask[g] = True
    sp.request(mask)                                   # not eligible without allow_released
    assert not sp.pending[g]
    sp.request(mask, allow_released=True)
    assert sp.pending[g] and opt.redundant[g]          # still in G_p


def test_dhspg_schedule_starts_from_the_norm_at_the_projection_test():
    """l_init_at="projection": the first decay step leaves (N − 1)/N of ‖x_g‖ as the half-space
    test saw it; "trial" starts from the lasso-shrunk trial point, a smaller norm."""
    runs = {}
    for at in ("projection", "trial"):
        torch.manual_seed(0)
        _, groups, opt, sp = _dhspg_run(steps=40, decay_N=10, l_init_at=at)
        runs[at] = sp.l_init
    chosen = (runs["projection"] > 0) & (runs["trial"] > 0)
    assert chosen.any() and (runs["trial"][chosen] < runs["projection"][chosen]).all()


def test_dhspg_score_keeps_its_magnitude_term_when_groups_are_zero():
    _, groups, opt, _ = _dhspg_run()
    xx = groups.squared_norms()
    assert (xx == 0).any()                             # the run zeroed its target groups
    d = {p: torch.randn_like(p) for p in opt.groups.model.parameters()}
    xd, dd = groups.reduce(lambda p: p * d[p]), groups.reduce(lambda p: d[p].pow(2))
    cos = xd / (xx.sqrt() * dd.sqrt()).clamp_min(1e-12)
    magnitude = opt._score(xx, xd, dd) - 0.5 * cos / cos.norm()
    live = xx > 0
    assert (magnitude[~live] == 0).all()
    inv = opt.sizes[live] / xx[live].sqrt()            # the term over the non-zero groups alone
    assert torch.allclose(magnitude[live], 0.5 * inv / inv.norm())
    assert magnitude[live].min() > 1e-3                # (a 1e-12 clamp left it at ~1e-13)


def test_dhspg_state_survives_a_checkpoint(tmp_path):
    a, _, opt_a, _ = _dhspg_run(steps=60)
    torch.manual_seed(0)
    b = TinyNet()
    groups_b = ChannelGroups(b, torch.randn(TINY), consumers=False)
    opt_b = DHSPG(b.parameters(), groups_b, lr=0.1, target_sparsity=0.5, lmbda=0.5, epsilon=0.9)
    b.load_state_dict(a.state_dict())
    save_checkpoint(opt_a.state_dict(), tmp_path / "opt.ckpt")  # plain data only, so it loads
    opt_b.load_state_dict(load_checkpoint(tmp_path / "opt.ckpt"))
    assert opt_b.step_count == 60 and torch.equal(opt_b.redundant, opt_a.redundant)
    assert torch.equal(opt_b.zero, opt_a.zero)


def test_dhspg_bad_parameters_name_the_value():
    model = TinyNet()
    with pytest.raises(ValueError, match="consumers=False"):
        DHSPG(model.parameters(), ChannelGroups(model, torch.randn(TINY)))
    groups = ChannelGroups(model, torch.randn(TINY), consumers=False)
    with pytest.raises(ValueError, match="1.5"):
        DHSPG(model.parameters(), groups, target_sparsity=1.5)


# ---- the pipelines (smoke profile, generated data, throw-away folders) ----

@pytest.mark.parametrize("host", ["depgraph", "otov2", "gatedecorator"])
def test_host_pipelines_write_consistent_records(host, tmp_path):
    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import run
    from dpm_lab.reporting.figures import report
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs", device="cpu",
                progress=False)
    records = {m: run(RunSpec(host=host, method=m, profile=profile), **dirs)
               for m in ("host", "sp", "dpm")}
    for m, r in records.items():
        assert r["host"] == host and r["method"] == m and r["model"] == "resnet20"
        assert r["config"]["host"] == host and r["config"]["method"] == m
        if host == "depgraph":
            assert r["macs_ratio"] <= 1 / 2.0
        if host == "gatedecorator":  # removal before fine-tuning is exact, at the target
            assert r["macs_ratio"] == pytest.approx(r["ticktock"][-1]["macs_ratio"])
            assert r["macs_ratio"] <= r["config"]["options"]["target_macs"]
            assert r["top1_after_pruning"] == r["top1_gated"]
        elif m != "host":  # removal is exact: same MACs as counted before, same accuracy
            assert r["macs"] == r["effective_macs"]
            assert r["top1_after_finalize"] == r["soft_top1"]
    (name, table, figure, notes, pairs, sr), = [r for r in report("smoke", tmp_path / "res",
                                                                 tmp_path / "fig") if r.name == host]
    assert sorted(table["method"]) == ["dpm", "host", "sp"] and figure.exists()
    assert sorted(pairs["comparison"]) == ["dpm - host", "dpm - sp", "sp - host"]
    assert (pairs["seeds"] == 1).all()
    assert sr["diff"].tolist() == [pytest.approx(records["dpm"]["final_top1"]
                                                 - records["sp"]["final_top1"])]


def test_dhspg_factory_keeps_the_training_config():
    from dpm_lab.training.config import TrainConfig
    model = TinyNet()
    groups = ChannelGroups(model, torch.randn(TINY), consumers=False)
    cfg = TrainConfig(epochs=1, lr=0.03, momentum=0.8, weight_decay=1e-3, nesterov=True)
    opt = DHSPG.factory(groups, target_sparsity=0.25)(model, cfg)
    pg = opt.param_groups[0]
    assert (pg["lr"], pg["momentum"], pg["weight_decay"], pg["nesterov"]) == (0.03, 0.8, 1e-3, True)
    assert opt.num_target == 8


def test_paper_recipes_hold_the_papers_settings():
    from dpm_lab.hosts.depgraph.recipe import depgraph_recipe
    from dpm_lab.hosts.otov2.recipe import otov2_recipe

    dg = depgraph_recipe("paper")
    assert (dg.model, dg.speedup, dg.reg, dg.sparse_learning.epochs, dg.finetune.epochs) == \
        ("resnet56", 2.11, 5e-4, 100, 100)
    assert depgraph_recipe("paper", sparse_learning=False).sparse_learning is None
    vgg, r50 = otov2_recipe("paper", "vgg16_bn"), otov2_recipe("paper", "resnet50_cifar")
    assert (vgg.target_sparsity, vgg.train.epochs, vgg.batch_size, vgg.from_dense) == (0.79, 300, 64, False)
    assert r50.target_sparsity == 0.9
    with pytest.raises(ValueError, match="resnet20"):
        otov2_recipe("paper", "resnet20")


# ---- OTOv2 + DPM: what Self-Rectifying reads (sr_signal) ----

def _slices(entries, s, tensor_of):
    """Structure ``s``'s slices of ``entries``, flattened and joined (a plain loop)."""
    return torch.cat([tensor_of(e.param).index_select(e.dim, (e.owner == s).nonzero().flatten())
                      .flatten() for e in entries])


def _direct_signals(groups, entries, live, x, u):
    """C_rate (cos(−u_i, x_i) over each structure's trainable BN slices) and C_len (‖u_i‖ over
    the decaying slices ``entries``, over its mean over the ``live`` structures of its group), per
    structure, from ``x`` and ``u`` (dicts parameter -> tensor), structure by structure."""
    S, bn = groups.num_structures, [e for e in groups.bn_entries() if e.param.requires_grad]
    rate = torch.tensor([float(-(_slices(bn, s, u.get) @ _slices(bn, s, x.get))
                               / (_slices(bn, s, u.get).norm() * _slices(bn, s, x.get).norm()))
                         for s in range(S)], dtype=torch.float64)
    length = torch.tensor([float(_slices(entries, s, u.get).norm()) for s in range(S)],
                          dtype=torch.float64)
    c_len = torch.empty(S, dtype=torch.float64)
    for g in range(len(groups.groups)):
        mine = groups.group_of == g
        c_len[mine] = length[mine] / length[mine & live].mean()
    return rate, c_len


def _sr_signal_run(signal):
    """DHSPG + DPM on TinyNet in float64 for 40 steps, SR recording but never releasing; at every
    step, SR's raw C_rate and C_len against :func:`_direct_signals` of the raw loss gradient
    (``"gradient"``) or of DHSPG's step direction u = (x − x̂)/lr, x̂ the point DHSPG stepped to
    (``"update"``). Returns the final parameters and SR's trace."""
    torch.manual_seed(0)
    model = TinyNet().double()
    groups = ChannelGroups(model, torch.randn(TINY, dtype=torch.float64), consumers=False)
    sr = SelfRectifying(t_rate=float("inf"), t_len=float("inf"), window=3, record=True)
    sp = SmoothPruning(groups, None, 8, rounds=(), rectifier=sr, input_size=TINY,
                       release_until=10 ** 6)
    lr = 0.1
    opt = DHSPG(model.parameters(), groups, lr=lr, target_sparsity=0.5, lmbda=0.5, epsilon=0.9,
                start_step=5, decay=sp, sr_signal=signal)
    state = type("S", (), {"optimizer": opt, "step": 0})()
    sp.on_fit_start(state)
    g = torch.Generator().manual_seed(0)
    params = list(model.parameters())
    decaying_steps = 0
    for t in range(40):
        x = torch.randn(16, *TINY[1:], generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = {p: p.detach().clone() for p in params}
        raw = {p: p.grad.clone() for p in params}
        opt.step()
        after = {p: p.detach().clone() for p in params}
        u = raw if signal == "gradient" else {p: (before[p] - after[p]) / lr for p in params}
        decaying_steps += int((sp.status == DECAYING).any())
        live = sp.status != PRUNED                   # as the step's SR sees them
        state.step = t
        sp.after_step(state)
        assert len(sr.trace) == t + 1
        rate, c_len = _direct_signals(groups, sp.entries, live, after, u)
        nonzero = rate.isfinite()                    # a zero group has no cosine
        assert torch.allclose(sr.trace[-1][3][nonzero], rate[nonzero], rtol=1e-9, atol=1e-12)
        assert torch.allclose(sr.trace[-1][4], c_len, rtol=1e-9, atol=1e-12)
    assert decaying_steps > 5 and sr.log == []
    return [p.detach().clone() for p in params], torch.stack(sr.trace)


def test_self_rectifying_reads_the_raw_gradient_or_dhspgs_step_as_told():
    """``sr_signal="gradient"`` (the default, the behaviour from before the option) gives SR the
    raw loss gradient; ``"update"`` gives it DHSPG's step direction, which here differs from it
    (momentum, weight decay, the lasso pull). The option changes what SR reads, not the step:
    with no release, both runs end with identical parameters."""
    params_g, trace_g = _sr_signal_run("gradient")
    params_u, trace_u = _sr_signal_run("update")
    for a, b in zip(params_g, params_u):
        assert torch.equal(a, b)
    decaying = trace_g[:, 2] > 0
    assert decaying.any() and torch.equal(decaying, trace_u[:, 2] > 0)
    assert not torch.allclose(trace_g[:, 3][decaying], trace_u[:, 3][decaying])
    assert not torch.allclose(trace_g[:, 4][decaying], trace_u[:, 4][decaying])


def test_sr_signal_option_is_resolved_refused_and_wired_like_the_other_deviations():
    """``--sr-signal`` applies to OTOv2 + DPM only; its default, the raw gradient, is left out of
    the configuration (which holds deviations only), so naming it is the same run as not; ``update``
    is a new run, and reaches DHSPG; a bad value is named."""
    from types import SimpleNamespace

    from dpm_lab.experiments.cli import _run_spec, build_parser
    from dpm_lab.experiments.method import Context
    from dpm_lab.hosts.otov2.method import OTOv2
    from dpm_lab.experiments.runspec import RunSpec, describe, resolve

    base = RunSpec(host="otov2", method="dpm", profile="smoke")
    plain, gradient = resolve(base), resolve(base.replace(sr_signal="gradient"))
    update = resolve(base.replace(sr_signal="update"))
    assert gradient.config == plain.config and gradient.run_id == plain.run_id
    assert "sr_signal" not in plain.config["options"]
    assert describe(plain.config)["sr_signal"] is None
    assert update.config["options"]["sr_signal"] == "update" and update.run_id != plain.run_id
    assert describe(update.config)["sr_signal"] == "update"
    for spec in (base.replace(method="sp"), base.replace(method="host"),
                 RunSpec(host="core", method="dpm", profile="smoke")):
        with pytest.raises(ValueError, match="--sr-signal 'update' does not apply.*otov2 "
                                             "--method dpm"):
            resolve(spec.replace(sr_signal="update"))
    with pytest.raises(ValueError, match="'raw'.*gradient, update"):
        resolve(base.replace(sr_signal="raw"))
    model = TinyNet()
    with pytest.raises(ValueError, match="'raw'.*gradient, update"):
        DHSPG(model.parameters(), ChannelGroups(model, torch.randn(TINY), consumers=False),
              sr_signal="raw")
    args = build_parser().parse_args(["run", "--host", "otov2", "--method", "dpm",
                                      "--sr-signal", "update"])
    assert _run_spec(args).sr_signal == "update"
    for res, want in ((plain, "gradient"), (update, "update")):  # the method hands it to DHSPG
        ctx = Context(res, SimpleNamespace(train=range(4)), SIZE, torch.device("cpu"),
                      None, None)
        method, net = OTOv2(ctx), get_model("resnet20")
        method.prepare(net)
        assert method.optimizer()(net, res.train).sr_signal == want

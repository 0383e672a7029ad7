"""TPP's regulariser, in float64: zero when nothing is pruned, its gradient equal to autograd's
of the written loss and touching only what it should, its ramp and layer-by-layer zeroing, and
removal after the phase leaving outputs unchanged."""
import pytest
import torch

from dpm_lab.hosts.tpp.algorithm import TPPRegularizer, filter_l1, layerwise_selection
from dpm_lab.pruning import ChannelGroups, finalize, SmoothPruning
from dpm_lab.training.models import get_model
from conftest import Stepper, calibrate_bn

SIZE = (1, 3, 32, 32)


def _resnet():
    torch.manual_seed(0)
    model = get_model("resnet20").double()
    with torch.no_grad():  # BN starts at γ = 1, β = 0: make both carry information
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model, ChannelGroups(model, torch.randn(*SIZE, dtype=torch.float64))


def _loss_grads(model):
    """Fill .grad with a real loss's gradients (float64)."""
    model.zero_grad()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_layerwise_selection_takes_the_smallest_filters_of_matching_layers():
    model, groups = _resnet()
    ids = layerwise_selection(groups, 0.5, "layer*.conv1")
    roots = {groups.groups[int(groups.group_of[i])].root for i in ids}
    assert roots == {g.root for g in groups.groups if g.root.endswith(".conv1")
                     and g.root.startswith("layer")}                      # 9 block conv1 groups
    l1 = filter_l1(groups)
    for g in groups.groups:
        if g.root in roots:
            mine = ids[(ids >= g.offset) & (ids < g.offset + g.size)]
            assert len(mine) == g.size // 2
            rest = torch.tensor([i for i in range(g.offset, g.offset + g.size) if i not in mine])
            assert l1[mine].max() <= l1[rest].min()
    with pytest.raises(ValueError, match="no group's root layer matches"):
        layerwise_selection(groups, 0.5, "block*.conv9")
    with pytest.raises(ValueError, match=r"\[0, 1\), got 1.5"):
        layerwise_selection(groups, 1.5, "layer*.conv1")


def test_regulariser_is_zero_when_nothing_is_pruned():
    model, groups = _resnet()
    before = _loss_grads(model)
    tpp = TPPRegularizer(groups, [], ramp_steps=100, stabilize_steps=0)
    tpp.penalty_gradients_(1.0)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())


def test_regulariser_gradient_is_autograds_and_touches_only_what_it_should():
    model, groups = _resnet()
    ids = layerwise_selection(groups, 0.5, "layer1.0.conv1")
    tpp = TPPRegularizer(groups, ids, ramp_steps=100, stabilize_steps=0, gram_weight=1000.0)
    before = _loss_grads(model)
    r = 0.3
    tpp.penalty_gradients_(r)
    added = {n: p.grad - before[n] for n, p in model.named_parameters()}
    # the written loss, differentiated by autograd
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    g = groups.groups[int(groups.group_of[ids[0]])]
    pruned = torch.zeros(g.size, dtype=torch.bool)
    pruned[ids - g.offset] = True
    model.zero_grad()
    W = conv.weight.flatten(1)
    G = W @ W.T
    M = (pruned[:, None] | pruned[None, :]).double()
    C = W.shape[0]
    loss = 1000.0 * r * (M * G ** 2).sum() / C ** 2
    loss = loss + r / 2 * (conv.weight[pruned] ** 2).sum()
    loss = loss + r / 2 * ((bn.weight[pruned] ** 2).sum() + (bn.bias[pruned] ** 2).sum())
    loss.backward()
    for n, p in model.named_parameters():
        want = p.grad if p.grad is not None else torch.zeros_like(p)
        assert torch.allclose(added[n], want, rtol=1e-12, atol=1e-15), n
    # only layer1.0.conv1 and its BN change; kept filters only through their cross terms
    changed = {n for n, a in added.items() if a.abs().max() > 0}
    assert changed == {"layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"}
    assert (added["layer1.0.bn1.weight"][~pruned] == 0).all()


def test_kept_filters_orthogonal_to_pruned_ones_get_no_gram_gradient():
    model, groups = _resnet()
    conv = model.layer1[0].conv1
    with torch.no_grad():  # filters 0..7 pruned, 8..15 kept, in orthogonal subspaces
        W = torch.zeros_like(conv.weight).flatten(1)
        W[:8, :72] = torch.randn(8, 72, dtype=torch.float64)
        W[8:, 72:] = torch.randn(8, 72, dtype=torch.float64)
        conv.weight.copy_(W.view_as(conv.weight))
    g = next(g for g in groups.groups if g.root == "layer1.0.conv1")
    tpp = TPPRegularizer(groups, torch.arange(g.offset, g.offset + 8), ramp_steps=10,
                         stabilize_steps=0)
    conv.weight.grad = torch.zeros_like(conv.weight)
    tpp.penalty_gradients_(1.0)
    assert (conv.weight.grad[8:] == 0).all() and (conv.weight.grad[:8].abs() > 0).any()


def test_ramp_and_layer_by_layer_zeroing_then_exact_removal():
    model, groups = _resnet()
    ids = layerwise_selection(groups, 0.25, "layer*.conv1")
    tpp = TPPRegularizer(groups, ids, ramp_steps=20, stabilize_steps=30, update_interval=5,
                         zero_interval=3)
    assert [tpp.r(t) for t in (0, 4, 5, 10, 19, 20, 100)] == [0, 0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert tpp.steps == 50
    run = Stepper(model, lr=0.01, seed=2, dtype=torch.float64)
    tpp.on_fit_start(run.state)
    model.train()
    norms = []
    for _ in range(tpp.steps):
        run.step(tpp)
        norms.append(groups.squared_norms(entries=groups.producer_entries())[ids])
    # layer l (of 9) is zeroed from stabilise step 3(l+1) on: all 9 by step 27 < 30
    assert (norms[-1] == 0).all()
    first = ids[groups.group_of[ids] == groups.group_of[ids].min()]
    assert (norms[20 + 3 - 1][torch.isin(ids, first)] > 0).all()
    assert (norms[20 + 3][torch.isin(ids, first)] == 0).all()
    # the zero channels come out without changing the network
    calibrate_bn(model, SIZE, dtype=torch.float64)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        soft = model(x)
    holder = SmoothPruning(groups, None, 1, rounds=(), release_until=0)
    holder.start_decay(ids)
    finalize(model, holder, SIZE)
    with torch.no_grad():
        assert (model(x) - soft).abs().max() <= 1e-9


def test_bad_arguments_are_named():
    _, groups = _resnet()
    with pytest.raises(ValueError, match="ramp_steps must be an integer >= 1, got 0"):
        TPPRegularizer(groups, [0], ramp_steps=0, stabilize_steps=0)
    with pytest.raises(ValueError, match="stabilize_steps must be an integer >= 0, got -1"):
        TPPRegularizer(groups, [0], ramp_steps=1, stabilize_steps=-1)


# ---- the pipeline (smoke profile, generated data) and the recipes ----

def test_l1_tpp_and_tpp_dpm_runs_prune_the_same_filters(tmp_path):
    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import run
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs", device="cpu",
                progress=False)
    l1 = run(RunSpec(profile=profile, method="single-step", layer_ratio=0.5), **dirs)
    tpp = run(RunSpec(profile=profile, method="tpp"), **dirs)
    both = run(RunSpec(profile=profile, method="tpp+dpm", decay_steps=3), **dirs)
    target = {"layer_ratio": 0.5, "layers": ["layer*.conv1"], "exclude": []}
    for r in (l1, tpp, both):
        assert r["config"]["options"]["target"] == target
    chosen = 3 * (16 + 32 + 64) // 2  # half of each block conv1 of ResNet-20
    # TPP x DPM leaves a filter Self-Rectifying released (--released leave): it is not pruned
    assert l1["selected"] == tpp["selected"] == both["selected"] + both["released"] == chosen
    assert both["released"] > 0                                        # SR acts in smoke
    assert l1["macs"] == tpp["macs"] < both["macs"] < l1["dense_macs"]
    assert len(tpp["tpp_history"]) == len(both["tpp_history"]) == 2   # 1 ramp + 1 stabilise
    assert tpp["top1_after_removal"] == tpp["top1_zeroed"]            # zero channels: exact
    assert both["top1_after_finalize"] == both["soft_top1"]
    # TPP's one selection is handed over once; each release keeps one filter more than L1 keeps
    assert both["decay"]["decay_steps"] == 3
    assert [r["selected"] for r in both["decay"]["rounds"]] == [chosen]
    assert both["released"] == len(both["releases"])
    assert all(b >= a for a, b in zip(l1["widths"], both["widths"], strict=True))
    assert sum(both["widths"]) - sum(l1["widths"]) == both["released"]


def test_tpp_recipes():
    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.hosts.tpp.recipe import tpp_recipe

    paper = tpp_recipe("paper", "resnet56")
    assert (paper.ramp_epochs, paper.stabilize_epochs, paper.update_interval, paper.r_max,
            paper.gram_weight, paper.zero_interval) == (256, 26, 10, 1.0, 1000.0, 100)
    assert (paper.regularise.lr, paper.finetune.epochs, paper.finetune.milestones) == \
        (1e-3, 120, (60, 90))
    assert paper.layers == ("layer*.conv1",) and tpp_recipe("paper", "vgg19_bn").exclude == \
        ("features.0",)
    mini = tpp_recipe("mini")  # regularisation comes out of the same fine-tuning budget
    assert mini.regularise.epochs + mini.finetune.epochs == get_profile("mini").finetune.epochs


def test_jacobian_rms_singular_value_of_a_linear_map():
    from dpm_lab.training.metrics import jacobian_rms_singular_value

    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3, bias=False)).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    exact = (lin[1].weight.pow(2).sum() / 3).sqrt().item()   # √(tr(WᵀW) / k), every sample
    estimate = jacobian_rms_singular_value(lin, x, probes=4000)
    assert abs(estimate - exact) < 0.02 * exact              # Monte Carlo, 4000 probes x 5


def test_replace_released_keeps_every_layer_at_its_ratio(loaders):
    """TPP x DPM with --released replace: thresholds that release every decaying filter once its
    window is full; each later round puts as many free filters of the same layer in their place,
    so every layer ends with exactly the number TPP chose, and none of them was released."""
    from dpm_lab.training.config import TrainConfig
    from dpm_lab.training.engine import fit
    from dpm_lab.hosts.tpp.algorithm import ReplaceReleased
    from dpm_lab.pruning import PRUNED, RELEASED, SelfRectifying

    train, test = loaders  # 4 steps per epoch
    torch.manual_seed(0)
    model = get_model("resnet20")
    groups = ChannelGroups(model, torch.randn(*SIZE))
    ids = layerwise_selection(groups, 0.5, "layer*.conv1")
    sr = SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"), window=1)
    sp = SmoothPruning(groups, None, 3, rounds=[0, 3, 6], rectifier=sr,
                       selector=ReplaceReleased(groups, ids))
    fit(model, train, test, TrainConfig(epochs=3, lr=0.02), hooks=[sp], seed=0, progress=False)
    assert len(sp.released_ids()) > 0 and sp.round_log[1]["selected"] > 0
    chosen = torch.bincount(groups.group_of[ids], minlength=len(groups.groups))
    pruned = torch.bincount(groups.group_of[sp.pruned_ids()], minlength=len(groups.groups))
    assert torch.equal(pruned, chosen)
    assert not set(sp.released_ids().tolist()) & set(sp.pruned_ids().tolist())
    assert (sp.status == PRUNED).sum() + (sp.status == RELEASED).sum() >= len(ids)

"""DecayPruner: DPM with Torch-Pruning's call pattern. It must be the existing machinery under
another face: the same selections and weights as SmoothPruning, and, with N = 1, the same pruned
model as Torch-Pruning's own BasePruner."""
import copy

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

import dpm_lab
from dpm_lab.pruning import DECAYING, ChannelGroups, ChannelRatio, SelfRectifying, SmoothPruning
from dpm_lab.pruning.decay_pruner import MACS_GRID_RATIO, MACS_GRID_STEPS
from dpm_lab.training.engine import TrainState
from dpm_lab.training.models import get_model
from conftest import TwoBranches, randomize_bn

X32 = (1, 3, 32, 32)


def resnet20(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return get_model("resnet20").to(dtype)


def constant(ratio, steps):
    """Torch-Pruning scheduler that asks for the whole ratio at every step: DPM's replacement
    rounds."""
    return [ratio] * (steps + 1)


def test_top_level_export():
    assert "DecayPruner" in dpm_lab.__all__
    assert dpm_lab.DecayPruner is dpm_lab.pruning.decay_pruner.DecayPruner


def test_equals_smooth_pruning_path_at_every_step():
    """Ratio target, N = 3, three rounds (the later ones replacement rounds), Self-Rectifying
    releasing: the same status, weights and momentum as SmoothPruning with ChannelRatio."""
    model = resnet20()
    ref = copy.deepcopy(model)
    x = torch.randn(*X32, dtype=torch.float64)
    sr = dict(window=2, t_rate=0.0, t_len=0.0, rule="any")  # releases early, so rounds replace
    rounds = [0, 5, 10]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = dpm_lab.DecayPruner(model, x, decay_steps=3, pruning_ratio=0.5, round_steps=rounds,
                                 iterative_pruning_ratio_scheduler=constant,
                                 self_rectifying=SelfRectifying(**sr), optimizer=opt)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    sp = SmoothPruning(ChannelGroups(ref, x), ChannelRatio(0.5), 3, criterion="l2",
                       rounds=rounds, rectifier=SelfRectifying(**sr))
    state = TrainState(ref, ref_opt, None, None, steps_per_epoch=0)
    sp.on_fit_start(state)
    gen = torch.Generator().manual_seed(1)
    for step in range(14):
        xb = torch.randn(8, 3, 32, 32, dtype=torch.float64, generator=gen)
        yb = torch.randint(0, 10, (8,), generator=gen)
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(m(xb), yb).backward()
            o.step()
        pruner.step()
        sp.after_step(state)
        state.step += 1
        assert torch.equal(pruner.decay.status, sp.status), step
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.equal(p, q), step
            assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])
    assert len(sp.released_ids()) > 0                     # SR acted ...
    assert [r["selected"] for r in pruner.selector.log][1:] != [0, 0]  # ... and rounds replaced
    assert pruner.counts()["decaying"] == 0
    assert pruner.current_step == 14


CONFIGS = {
    "local": dict(pruning_ratio=0.3),
    "global": dict(pruning_ratio=0.3, global_pruning=True),
    "round_to": dict(pruning_ratio=0.3, round_to=4),
    "ratio_dict": dict(pruning_ratio=0.2, ratio_dict=True),
    "ignored": dict(pruning_ratio=0.4, ignore_layer1=True),
}


def tp_arguments(model, config):
    kw = {k: v for k, v in config.items() if k not in ("ratio_dict", "ignore_layer1")}
    kw["ignored_layers"] = [model.fc] + ([model.layer1] if config.get("ignore_layer1") else [])
    if config.get("ratio_dict"):
        kw["pruning_ratio_dict"] = {model.layer3: 0.6}
    return kw


@pytest.mark.parametrize("name", CONFIGS)
def test_n1_removes_what_torch_pruning_removes(name):
    """N = 1, no SR: finalize gives Torch-Pruning's pruned model (same importance, ratio,
    ignored layers, round_to, pruning_ratio_dict): same layer shapes and the same outputs."""
    model = resnet20()
    theirs = copy.deepcopy(model)
    x = torch.randn(*X32, dtype=torch.float64)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    tp.pruner.BasePruner(theirs, x, importance=imp, **tp_arguments(theirs, CONFIGS[name])).step()
    ours = dpm_lab.DecayPruner(model, x, imp, decay_steps=1,
                               **tp_arguments(model, CONFIGS[name])).finalize()
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    assert shapes(ours) != shapes(resnet20())
    batch = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ours.eval()(batch), theirs.eval()(batch), rtol=0, atol=1e-10)


def test_options_are_honoured():
    dense = resnet20()
    x = torch.randn(*X32, dtype=torch.float64)

    def pruned(**kw):
        model = copy.deepcopy(dense)
        return dpm_lab.DecayPruner(model, x, decay_steps=1, **kw).finalize()

    m = pruned(pruning_ratio=0.3, round_to=4)
    assert all(c.out_channels % 4 == 0 for c in m.modules() if isinstance(c, nn.Conv2d))
    model = copy.deepcopy(dense)
    m = dpm_lab.DecayPruner(model, x, decay_steps=1, pruning_ratio=0.3,
                            ignored_layers=[model.fc, model.layer1]).finalize()
    assert [b.conv1.out_channels for b in m.layer1] == [16, 16, 16]
    assert m.conv1.out_channels == 16                       # the stage-1 residual group too
    assert m.layer2[0].conv1.out_channels < 32
    model = copy.deepcopy(dense)
    m = dpm_lab.DecayPruner(model, x, decay_steps=1, pruning_ratio=0.2,
                            pruning_ratio_dict={model.layer3: 0.6}).finalize()
    # Torch-Pruning keeps int(channels * (1 - ratio)): 25 of 64 at 0.6, 25 of 32 at 0.2
    assert [b.conv1.out_channels for b in m.layer3] == [25] * 3
    assert [b.conv1.out_channels for b in m.layer2] == [25] * 3


@pytest.mark.parametrize("global_pruning", [False, True], ids=["local", "global"])
def test_rounds_follow_torch_pruning_iterative_steps(global_pruning):
    """Two rounds from an existing pruner (from_pruner) with N = 1 and no training in between
    remove what the same pruner removes in two hard steps; under global ranking too, where the
    second round's 'mean' normaliser must leave out the zeroed channels, as removal does."""
    model, theirs = resnet20(), resnet20()
    x = torch.randn(*X32, dtype=torch.float64)
    make = lambda m: tp.pruner.BasePruner(  # noqa: E731
        m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.5,
        iterative_steps=2, ignored_layers=[m.fc], global_pruning=global_pruning)
    hard = make(theirs)
    hard.step()
    hard.step()
    pruner = dpm_lab.DecayPruner.from_pruner(make(model), x, decay_steps=1, round_steps=[0, 1])
    pruner.step(torch.optim.SGD(model.parameters(), lr=0.0))  # no training: only the round
    assert [r["selected"] for r in pruner.selector.log] == [224 // 2, 224 // 2]
    ours = pruner.finalize()
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    batch = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ours.eval()(batch), theirs.eval()(batch), rtol=0, atol=1e-10)


def _round_1_picks(normalizer, zero_held: bool):
    """Global ranking, N = 10, rounds at steps 0 and 1 (no training): round 0's channels still
    decay at round 1. With ``zero_held`` every slice of them is zeroed before round 1. Returns
    (held, round 1's picks) as bool ``[S]``."""
    torch.manual_seed(0)
    model = TwoBranches()
    randomize_bn(model, 0)
    model.double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer=normalizer)
    pruner = dpm_lab.DecayPruner(model, x, imp, decay_steps=10, pruning_ratio=0.5,
                                 global_pruning=True, round_steps=[0, 1])
    held = pruner.decay.status == DECAYING
    if zero_held:
        pruner.groups.scale_((~held).double())
    pruner.step(torch.optim.SGD(model.parameters(), lr=0.0))
    return held, (pruner.decay.status == DECAYING) & ~held


def test_held_channels_do_not_shift_later_picks_among_free_ones():
    """Torch-Pruning's 'mean' normaliser is taken over the free channels: round 1 picks the same
    channels whether round 0's (held, decaying) channels keep their weights or are zeroed. The
    control, the same mean over the whole group (a callable normaliser, which cannot be
    restricted), shows that here the held channels' weights do move the picks."""
    held, kept = _round_1_picks("mean", zero_held=False)
    held_z, zeroed = _round_1_picks("mean", zero_held=True)
    assert torch.equal(held, held_z) and held.any() and kept.any()
    assert torch.equal(kept, zeroed)
    whole_group = lambda imp: imp / imp.mean()  # noqa: E731
    assert not torch.equal(_round_1_picks(whole_group, False)[1],
                           _round_1_picks(whole_group, True)[1])


def test_torchvision_model_at_224_px_needs_the_size_once():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(1, 3, 224, 224)
    dense_macs = tp.utils.count_ops_and_params(model, x)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = dpm_lab.DecayPruner(model, x, decay_steps=2, pruning_ratio=0.4, optimizer=opt)
    assert pruner.input_size == (1, 3, 224, 224)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(2, 3, 224, 224)),
                                    torch.randint(0, 10, (2,))).backward()
        opt.step()
        pruner.step()
    batch = torch.randn(2, 3, 224, 224)
    before = model.eval()(batch)
    pruned = pruner.finalize()
    assert tp.utils.count_ops_and_params(pruned, x)[0] < 0.6 * dense_macs  # 40 % of channels
    torch.testing.assert_close(pruned(batch), before, rtol=0, atol=1e-4)


def test_macs_target_rounds_meet_their_budgets_at_the_smallest_step():
    """target_macs over two rounds: round 0 keeps at most 1 - 0.5 / 2 of the dense MACs, with the
    first step of the ratio grid at which Torch-Pruning's own (hard) pruning does; after round 1
    and at the end, 0.5 holds."""
    model = resnet20(torch.float32)
    dense = copy.deepcopy(model)
    x = torch.randn(*X32)
    macs = lambda m: tp.utils.count_ops_and_params(m, x)[0]  # noqa: E731
    pruner = dpm_lab.DecayPruner(model, x, decay_steps=1, target_macs=0.5, global_pruning=True,
                                 iterative_steps=2, total_steps=3)
    first = pruner.selector.log[0]
    assert first["budget"] == 0.75

    def hard(grid_step):  # Torch-Pruning pruning the dense model to that grid step at once
        m = copy.deepcopy(dense)
        tp_pruner = tp.pruner.BasePruner(
            m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), global_pruning=True,
            pruning_ratio=MACS_GRID_RATIO, iterative_steps=MACS_GRID_STEPS,
            ignored_layers=[m.fc])
        tp_pruner.current_step = grid_step - 1
        tp_pruner.step()
        return macs(m)

    assert hard(first["pruner_step"]) <= 0.75 * macs(dense) < hard(first["pruner_step"] - 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    pruner.step(opt)
    pruner.step(opt)                                      # round 1, at step 2
    assert pruner.selector.log[1]["budget"] == 0.5 and pruner.selector.log[1]["selected"] > 0
    pruner.step(opt)
    assert macs(pruner.finalize()) <= 0.5 * macs(dense)


def test_summary_shows_decaying_pruned_released():
    model = resnet20(torch.float32)
    pruner = dpm_lab.DecayPruner(model, torch.randn(*X32), decay_steps=3, pruning_ratio=0.25)
    text = repr(pruner)
    assert "112 decaying, 0 pruned, 0 released" in text
    assert "layer1.0.conv1" in text and "pruning_ratio=0.25" in text


def test_step_needs_an_optimizer_once():
    model = resnet20(torch.float32)
    pruner = dpm_lab.DecayPruner(model, torch.randn(*X32), decay_steps=2, pruning_ratio=0.25)
    with pytest.raises(ValueError, match="needs the optimiser"):
        pruner.step()
    pruner.step(torch.optim.SGD(model.parameters(), lr=0.1))
    pruner.step()                                         # the optimiser is kept
    assert pruner.counts()["pruned"] == 112


BAD = [
    (dict(pruning_ratio=0.5, target_macs=0.5), ValueError, "give one target"),
    (dict(), ValueError, "give one target"),
    (dict(pruning_ratio=1.2), ValueError, r"pruning_ratio must be in \(0, 1\), got 1.2"),
    (dict(target_macs=0.0), ValueError, r"target_macs .* must be in \(0, 1\), got 0.0"),
    (dict(pruning_ratio=0.5, decay_steps=0), ValueError, "decay_steps .* got 0"),
    (dict(pruning_ratio=0.5, importance="l2"), TypeError, "importance must be .* got 'l2'"),
    (dict(pruning_ratio=0.5, round_to=0), ValueError, "round_to .* got 0"),
    (dict(pruning_ratio=0.5, global_pruning="yes"), TypeError, "global_pruning .* got 'yes'"),
    (dict(pruning_ratio=0.5, ignored_layers=[nn.Linear(2, 2)]), ValueError, "not a layer"),
    (dict(pruning_ratio=0.5, ignored_layers=["fc"]), TypeError, "must be a layer .* got 'fc'"),
    (dict(pruning_ratio=0.5, iterative_steps=0), ValueError, "iterative_steps .* got 0"),
    (dict(pruning_ratio=0.5, iterative_steps=3), ValueError, "needs total_steps"),
    (dict(pruning_ratio=0.5, iterative_steps=3, total_steps=3), ValueError,
     "total_steps must be .* >= .* = 4.*got 3"),
    (dict(pruning_ratio=0.5, round_steps=[4, 2]), ValueError, r"round_steps .* got \[4, 2\]"),
    (dict(pruning_ratio=0.5, round_steps=[0, 4], iterative_steps=3), ValueError,
     "round_steps has 2 rounds but iterative_steps=3"),
    (dict(pruning_ratio=0.5, round_steps=[0, 4], total_steps=9), ValueError, "not both"),
    (dict(pruning_ratio=0.5, self_rectifying=True), TypeError, "self_rectifying .* got True"),
    (dict(pruning_ratio=0.5, optimizer="sgd"), TypeError, "optimizer .* got 'sgd'"),
    (dict(pruning_ratio=0.5, self_rectifying=SelfRectifying(window=1)), ValueError,
     "Self-Rectifying could never release"),
    (dict(target_macs=0.5, pruning_ratio_dict={"x": 0.5}), ValueError, "pruning_ratio_dict"),
    (dict(pruning_ratio=0.5, example_inputs=[torch.randn(*X32)]), TypeError,
     "example_inputs must be one input tensor .* got list"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_arguments_give_one_clear_error(kwargs, error, match):
    model = resnet20(torch.float32)
    kwargs = {"decay_steps": 2, **kwargs}
    x = kwargs.pop("example_inputs", torch.randn(*X32))
    with pytest.raises(error, match=match):
        dpm_lab.DecayPruner(model, x, **kwargs)


def test_from_pruner_bad_arguments():
    model = resnet20(torch.float32)
    x = torch.randn(*X32)
    with pytest.raises(TypeError, match="Torch-Pruning pruner .* got str"):
        dpm_lab.DecayPruner.from_pruner("pruner", x, decay_steps=2)
    pruner = tp.pruner.BasePruner(model, x, tp.importance.GroupMagnitudeImportance(),
                                  iterative_steps=2, ignored_layers=[model.fc])
    with pytest.raises(ValueError, match="3 rounds need 3 pruner steps"):
        dpm_lab.DecayPruner.from_pruner(pruner, x, decay_steps=2, round_steps=[0, 2, 4])
    pruner.step()
    with pytest.raises(ValueError, match="already stepped 1 times"):
        dpm_lab.DecayPruner.from_pruner(pruner, x, decay_steps=2)

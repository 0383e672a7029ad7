"""Iterative pruning (issue 28): k physical removals over DPM's span of fine-tuning."""
import copy

import pytest
import torch

from dpm_lab.pruning import (ChannelRatio, IterativePruning, MacsTarget, iterative_rounds,
                             load_pruned, single_step_prune)
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.data import TensorLoader
from dpm_lab.training.engine import fit
from dpm_lab.training.metrics import macs_params
from dpm_lab.training.models import get_model
from conftest import Float64Batches, Stepper, randomize_bn


@pytest.fixture
def double_loaders(synthetic):
    train, test = synthetic  # 128 training images: 4 steps per epoch
    return (Float64Batches(TensorLoader(train.subset(128), 32, train=True, seed=0)),
            Float64Batches(TensorLoader(test.subset(32), 32, train=False)))


def _dense(seed=0):
    torch.manual_seed(seed)
    model = get_model("resnet20")
    randomize_bn(model, seed)
    return model.double()


def _steps(run, pruner, n):
    """``n`` steps of the bare loop, each with the optimiser the pruner handed over last."""
    for _ in range(n):
        run.opt = run.state.optimizer
        run.step(pruner)


def test_one_round_is_single_step_pruning(double_loaders):
    """k = 1: the same channels, then the same weights after the same training steps and the
    same outputs, bit for bit (float64)."""
    train, test = double_loaders
    dense, cfg = _dense(), TrainConfig(epochs=1, lr=0.05)
    hard = copy.deepcopy(dense)
    _, _, ids = single_step_prune(hard, MacsTarget(0.5))
    fit(hard, train, test, cfg, device="cpu", progress=False)
    model = copy.deepcopy(dense)
    pruner = IterativePruning(model, MacsTarget(0.5), iterative_rounds(1, 100))
    fit(model, train, test, cfg, hooks=[pruner], device="cpu", progress=False)
    assert torch.equal(pruner.removed_ids(), torch.sort(ids).values)
    assert [p.shape for p in hard.parameters()] == [p.shape for p in model.parameters()]
    for (k, a), b in zip(hard.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(hard.eval()(x), model.eval()(x))


def _cubic(final, k):
    # Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - t/n)^3, s_i = 0, t = 1..n
    return [final + (0 - final) * (1 - t / k) ** 3 for t in range(1, k + 1)]


@pytest.mark.parametrize("schedule", ["linear", "agp"])
def test_rounds_follow_the_schedule_and_meet_the_target(schedule):
    """Each round aims at the schedule's fraction of dense MACs removed and keeps at most the
    MACs it aimed at; the last round's target is the run's (MacsTarget: effective MACs <= ratio x
    dense, as for single-step)."""
    model, k, target = _dense(), 4, 0.25
    run = Stepper(model, dtype=torch.float64)
    pruner = IterativePruning(model, MacsTarget(target), [0, 1, 2, 3], schedule=schedule)
    dense_macs = macs_params(model)[0]
    pruner.on_fit_start(run.state)
    _steps(run, pruner, 3)
    final = 1 - target
    expected = [final * t / k for t in range(1, k + 1)] if schedule == "linear" \
        else _cubic(final, k)
    log = pruner.round_log
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert [r["scheduled_ratio"] for r in log] == pytest.approx(expected, abs=1e-12)
    assert [r["target"]["ratio"] for r in log] == pytest.approx([1 - s for s in expected], abs=1e-12)
    assert all(r["selected"] > 0 for r in log)
    assert all(r["macs_ratio"] <= r["target"]["ratio"] for r in log)
    assert macs_params(model)[0] <= target * dense_macs
    assert macs_params(model)[0] / dense_macs == log[-1]["macs_ratio"]
    if schedule == "agp":  # AGP front-loads: more of the removal in round 1 than linear's 1/k
        assert log[0]["scheduled_ratio"] > final / k


def test_channel_ratio_rounds_cap_each_group_at_its_dense_size():
    """A ChannelRatio target: after the last round every group has lost floor(ratio x dense
    size) structures, counted against the dense model although earlier rounds shrank it."""
    model = _dense()
    run = Stepper(model, dtype=torch.float64)
    pruner = IterativePruning(model, ChannelRatio(0.5), [0, 1, 2])
    pruner.on_fit_start(run.state)
    _steps(run, pruner, 2)
    for g in pruner.dense.groups:
        assert int(pruner.removed[g.offset:g.offset + g.size].sum()) == g.size // 2


def test_a_removal_carries_the_momentum_of_the_surviving_slices():
    """Before a round every momentum buffer is set equal to its parameter; after it each new
    parameter's buffer must still equal it: the state was cut with exactly the weights' cut.
    The learning rate and the schedule's step go on unchanged."""
    model = _dense()
    run = Stepper(model, dtype=torch.float64)
    pruner = IterativePruning(model, MacsTarget(0.5), [0, 2])
    pruner.on_fit_start(run.state)
    _steps(run, pruner, 1)
    opt = run.opt = run.state.optimizer
    with torch.no_grad():
        for p in model.parameters():
            opt.state[p]["momentum_buffer"].copy_(p)
    shapes = [p.shape for p in model.parameters()]
    lr, last_epoch = opt.param_groups[0]["lr"], run.state.scheduler.last_epoch
    pruner.round(2, run.state)  # what after_step runs before step 2
    new = run.state.optimizer
    assert new is not opt and pruner.round_log[-1]["selected"] > 0
    assert [p.shape for p in model.parameters()] != shapes
    for name, p in model.named_parameters():
        assert torch.equal(new.state[p]["momentum_buffer"], p.detach()), name
    assert new.param_groups[0]["lr"] == lr and run.state.scheduler.last_epoch == last_epoch
    assert {id(p) for p in new.param_groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_resume_between_rounds_equals_an_uninterrupted_run(double_loaders, tmp_path):
    from test_engine import Interrupt

    train, test = double_loaders

    def run(ck, at):
        model = _dense()
        pruner = IterativePruning(model, MacsTarget(0.4), [0, 3, 6], schedule="agp")
        fit(model, train, test, TrainConfig(epochs=2, lr=0.05), hooks=[pruner, Interrupt(at)],
            checkpoint=ck, resume=True, device="cpu", seed=0, progress=False)
        return model, pruner

    full, p_full = run(tmp_path / "a.ckpt", -1)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt", 1)  # stops after epoch 1 (step 4): rounds 0 and 3 done
    resumed, p_res = run(tmp_path / "b.ckpt", -1)
    assert [r["step"] for r in p_res.round_log] == [0, 3, 6]
    assert p_full.round_log == p_res.round_log and p_full.history == p_res.history
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_k_rounds_span_dpm_rounds_and_bad_values_are_named():
    assert iterative_rounds(4, 30) == [0, 10, 20, 30]  # DPM's rounds at N = 10 over 30 steps
    assert iterative_rounds(1, 30) == [0]
    with pytest.raises(ValueError, match="5 removal rounds .* step 3"):
        iterative_rounds(5, 3)
    with pytest.raises(ValueError, match="got 0"):
        iterative_rounds(0, 30)
    with pytest.raises(ValueError, match="'cubic'.*linear, agp"):
        IterativePruning(_dense(), MacsTarget(0.5), [0], schedule="cubic")


def test_smoke_pipeline_writes_a_consistent_record(tmp_path):
    """Through ``experiments.run``: DPM's rounds (the default k) at the run's N and prune phase,
    the target met, the saved model replaying to the recorded MACs; the report pairs it with
    single-step run from the same dense model."""
    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import loaders, run, run_paths
    from dpm_lab.errors import DpmLabError
    from dpm_lab.reporting.figures import PAIR_COLUMNS, recorded_pairs, report
    from dpm_lab.experiments.method import selection_rounds
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs")
    spec = RunSpec(method="iterative", profile=profile)
    record = run(spec, device="cpu", progress=False, **dirs)
    single = run(spec.replace(method="single-step"), device="cpu", progress=False, **dirs)
    o = record["config"]["options"]
    assert (o["prune_schedule"], o["iterative_steps"]) == ("linear", None)
    steps = record["history"][-1]["step"]
    rounds = selection_rounds(steps, o["decay_steps"], o["prune_phase"])
    assert len(rounds) >= 2 and [r["step"] for r in record["prune_rounds"]] == rounds
    assert record["macs_ratio"] <= o["target"]["macs"]
    assert record["macs_ratio"] == record["prune_rounds"][-1]["macs_ratio"]
    assert record["selected"] == sum(r["selected"] for r in record["prune_rounds"])
    assert record["dense_run_id"] == single["dense_run_id"]
    assert len(record["history"]) == len(single["history"])  # the same epochs
    model = load_pruned(run_paths(spec, **dirs)[1] / "model.pt",
                        get_model(profile.model, loaders(profile, 0, "cpu").num_classes))
    assert macs_params(model)[0] == record["macs"]
    core = {c.name: c for c in report(profile.name, dirs["results_dir"], tmp_path / "fig")}["core"]
    assert "iterative - single-step" in set(core.pairs["comparison"])
    assert core.figure.exists()
    # notebook 02's view: the iterative rows, the family still the whole table
    figure, rows, summary = recorded_pairs(profile.name, "iterative", dirs["results_dir"],
                                           tmp_path / "fig")
    assert figure == core.figure and list(rows.columns) == PAIR_COLUMNS
    assert list(rows["comparison"]) == ["iterative - single-step"]
    assert f"Holm family m = {core.pairs['m'].iloc[0]}" in summary and "seeds per pair 1" in summary
    with pytest.raises(DpmLabError, match="no paired comparison names 'tpp'.*iterative - single"):
        recorded_pairs(profile.name, "tpp", dirs["results_dir"], tmp_path / "fig")
    with pytest.raises(DpmLabError, match="no 'depgraph' records of profile 'smoke'.*core"):
        recorded_pairs(profile.name, "iterative", dirs["results_dir"], tmp_path / "fig",
                       host="depgraph")

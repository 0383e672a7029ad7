"""The precision switch (issue 25): ``fp32`` (the default) or ``bf16`` autocast, for every training
phase of a run. fp32 keeps every identity of before; bf16 is another run with another dense
model, convolutions compute in bfloat16 while parameters, optimiser state and Smooth Pruning's
exact zeros stay float32; a bad value is named with the allowed ones."""
import json
from pathlib import Path

import pytest
import torch

from dpm_lab.experiments import runner
from dpm_lab.experiments.cli import main
from dpm_lab.experiments.experiment_file import load_experiment
from dpm_lab.experiments.identity import config_hash, dense_config
from dpm_lab.experiments.main_job import main_job_spec
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.runspec import RunSpec, describe, resolve
from dpm_lab.pruning import (ChannelGroups, MacsTarget, SelfRectifying, SmoothPruning,
                             finalize)
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.engine import Hook, check_precision, fit
from dpm_lab.training.metrics import macs_params
from dpm_lab.training.models import get_model

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "main-job" / "mini"

bf16_kernels = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
needs_bf16 = pytest.mark.skipif(not bf16_kernels, reason="this CPU has no oneDNN bf16 kernels, "
                                                         "where bf16 is refused (tested below)")


def _record(folder: str) -> dict:
    [path] = (REFERENCE / folder).glob("*.json")
    return json.loads(path.read_text())


def test_fp32_is_the_default_and_keeps_the_identities_of_the_committed_records():
    """The main job's committed records (mini, seed 0) were made before the switch existed: the
    same spec, with precision left out or named fp32, resolves to their run ids and configs."""
    pruned, dense = _record("core"), _record("dense")
    for spec in (main_job_spec("mini", 0), main_job_spec("mini", 0).replace(precision="fp32")):
        res = resolve(spec)
        assert res.profile.precision == "fp32" and "precision" not in res.config
        assert res.run_id == pruned["run_id"]
        assert json.loads(json.dumps(res.config)) == pruned["config"]
        assert config_hash(dense_config(res.profile, 0)) == dense["run_id"]
    assert describe(pruned["config"])["precision"] is None


def test_bf16_is_another_run_starting_from_another_dense_model():
    fp32 = resolve(main_job_spec("mini", 0))
    bf16 = resolve(main_job_spec("mini", 0).replace(precision="bf16"))
    assert bf16.config["precision"] == "bf16" and bf16.run_id != fp32.run_id
    assert {k: v for k, v in bf16.config.items() if k != "precision"} == fp32.config
    assert dense_config(bf16.profile, 0) == {**dense_config(fp32.profile, 0), "precision": "bf16"}
    assert describe(bf16.config)["precision"] == "bf16"
    # a profile may default to it: the same run as asking for it
    profile = get_profile("mini").with_(precision="bf16")
    assert resolve(main_job_spec(profile, 0)).run_id == bf16.run_id


def test_a_bad_precision_is_named_with_the_allowed_values(tmp_path, capsys):
    allowed = "fp32, bf16"
    with pytest.raises(ValueError, match=f"'fp16'; choose one of: {allowed}"):
        resolve(RunSpec(profile="mini", precision="fp16"))
    with pytest.raises(ValueError, match=f"'half'; choose one of: {allowed}"):
        get_profile("mini").with_(precision="half")
    with pytest.raises(ValueError, match=f"'float32'; choose one of: {allowed}"):
        fit(torch.nn.Linear(2, 2), [(torch.zeros(1, 2), torch.zeros(1).long())], [],
            TrainConfig(epochs=1), device="cpu", precision="float32")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--profile", "smoke", "--precision", "fp16"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--precision" in err and "'fp16'" in err and "fp32" in err and "bf16" in err
    path = tmp_path / "experiment.toml"
    path.write_text('profile = "mini"\nprecision = ["fp32", "fp16"]\n')
    with pytest.raises(ValueError, match=f"{path}: field precision: 'fp16' is not allowed; "
                                         f"choose one of: {allowed}"):
        load_experiment(path)


def test_bf16_is_refused_on_a_device_without_bf16_kernels(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(ValueError, match="precision 'bf16' needs bfloat16 kernels.*device cpu.*"
                                         "use precision 'fp32'"):
        check_precision("bf16", torch.device("cpu"))
    check_precision("fp32", torch.device("cpu"))  # fp32 needs nothing


def _conv_output_dtypes(model) -> list:
    """The dtypes of every convolution's output in training-mode forwards, and in eval-mode ones
    (``fit``'s evaluation), as ``[(training, dtype), ...]``."""
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: seen.append((mod.training, out.dtype)))
    return seen


@needs_bf16
@pytest.mark.parametrize("precision, train_dtype", [("fp32", torch.float32),
                                                    ("bf16", torch.bfloat16)])
def test_bf16_trains_convolutions_in_bfloat16_and_keeps_float32_weights(loaders, precision,
                                                                        train_dtype):
    """Inside the training step every convolution outputs ``train_dtype``; evaluation is float32
    either way; parameters and momentum stay float32."""
    train, test = loaders
    torch.manual_seed(0)
    model = get_model("resnet20")
    seen = _conv_output_dtypes(model)
    fit(model, train, test, TrainConfig(epochs=1, lr=0.02), seed=0, progress=False,
        device="cpu", precision=precision)
    assert {d for training, d in seen if training} == {train_dtype}
    assert {d for training, d in seen if not training} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())


@needs_bf16
def test_under_bf16_dpm_zeroes_pruned_structures_exactly_and_meets_its_macs_target(loaders):
    """Smooth Pruning's invariant under autocast: the slices of every pruned structure, and their
    momentum, are exactly zero (autocast changes op dtypes only; the decay acts on the float32
    parameters after the step), and the finalized model meets the MACs target."""
    train, test = loaders  # 4 steps per epoch
    torch.manual_seed(0)
    model = get_model("resnet20")
    groups = ChannelGroups(model, torch.randn(1, 3, 32, 32))
    sr = SelfRectifying(t_rate=-float("inf"), t_len=-float("inf"), window=1)  # releases too
    dpm = SmoothPruning(groups, MacsTarget(0.5), decay_steps=3, rounds=[0, 3, 6], rectifier=sr)
    momentum = {}

    class Momentum(Hook):  # the optimiser's state after the last step, before finalize
        def on_epoch_end(self, state):
            momentum.update({p: state.optimizer.state[p]["momentum_buffer"].clone()
                             for p in model.parameters()})

    fit(model, train, test, TrainConfig(epochs=3, lr=0.02), hooks=[dpm, Momentum()], seed=0,
        progress=False, device="cpu", precision="bf16")
    pruned = dpm.pruned_ids()
    assert len(pruned) > 0 and len(dpm.release_log) > 0
    for e in groups.entries:
        idx = torch.isin(e.owner, pruned).nonzero().flatten()
        if len(idx):
            assert e.param.dtype == torch.float32
            assert (e.param.detach().index_select(e.dim, idx) == 0).all()
            assert (momentum[e.param].index_select(e.dim, idx) == 0).all()
    dense = dpm.dense_macs
    finalize(model, dpm)
    assert macs_params(model)[0] <= 0.5 * dense


@needs_bf16
def test_a_bf16_smoke_run_records_its_precision_in_both_records(tmp_path):
    rec = runner.run(RunSpec(profile="smoke", method="dpm", precision="bf16"),
                     results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu",
                     progress=False)
    [dense_path] = (tmp_path / "results" / "smoke" / "dense").glob("*.json")
    dense = json.loads(dense_path.read_text())
    assert rec["precision"] == dense["precision"] == "bf16"
    assert rec["config"]["precision"] == dense["config"]["precision"] == "bf16"
    assert rec["dense_run_id"] == dense["run_id"]
    assert rec["macs_ratio"] <= 0.5


class _Reached(Exception):
    pass


@needs_bf16
@pytest.mark.parametrize("host, method, module", [
    ("depgraph", "host", "dpm_lab.hosts.depgraph.method"),          # sparse learning
    ("core", "tpp", "dpm_lab.hosts.tpp.method"),                    # TPP's regularisation
    ("gatedecorator", "dpm", "dpm_lab.hosts.gatedecorator.algorithm"),  # ticks and tocks
])
def test_a_hosts_own_training_phase_trains_in_the_runs_precision(tmp_path, monkeypatch, host,
                                                                method, module):
    """The phases a method trains before the runner's (its own ``fit`` calls) get the run's
    precision too: the call is stopped at once and what it was asked for is read."""
    def stop(*args, precision="fp32", **kw):
        raise _Reached(precision)

    monkeypatch.setattr(f"{module}.fit", stop)
    with pytest.raises(_Reached) as reached:
        runner.run(RunSpec(profile="smoke", host=host, method=method, precision="bf16"),
                   results_dir=tmp_path / "results", runs_dir=tmp_path / "runs", device="cpu",
                   progress=False)
    assert reached.value.args == ("bf16",)

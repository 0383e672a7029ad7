"""A run is identified by its complete resolved configuration: every option enters it, options
that do not apply are refused, and a changed option never returns another run's record."""
import json

import pytest

from dpm_lab.experiments.identity import comparable_id, config_hash
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.runner import run, run_paths
from dpm_lab.experiments.runspec import RunSpec, describe, grid, resolve

SMOKE = get_profile("smoke").with_(dataset="synthetic")


def _id(**kw) -> str:
    return resolve(RunSpec(profile=SMOKE, **kw)).run_id


def test_defaults_are_filled_in_and_the_hash_is_stable():
    res = resolve(RunSpec(profile=SMOKE, method="dpm"))
    o = res.config["options"]
    assert o["target"] == {"macs": 0.5} and o["criterion"] == "l2"
    assert o["decay_steps"] == SMOKE.decay_steps and o["prune_phase"] == 0.5
    # the smoke profile's own window (its N = 4 could never fill the default 10)
    assert o["self_rectifying"] == {"t_rate": 0.5, "t_len": 1.0, "rule": "all", "window": 2,
                                    "rate_reference": "gradient"}
    assert res.config["version"] and res.config["data"]["val_fraction"] == 0.0
    # giving a default explicitly is the same run
    assert _id(method="dpm") == _id(method="dpm", t_rate=0.5, window=2, target_macs=0.5)
    assert res.run_id == config_hash(json.loads(json.dumps(res.config)))


@pytest.mark.parametrize("change", [
    dict(t_rate=0.1), dict(t_len=2.0), dict(rule="any"), dict(window=3),
    dict(rate_reference="norm"), dict(decay_steps=3), dict(prune_phase=0.25), dict(epochs=3),
    dict(criterion="l1"), dict(target_macs=0.25), dict(val_fraction=0.1), dict(seed=1),
    dict(model="resnet32"),
])
def test_every_single_option_changes_the_identity(change):
    assert _id(method="dpm", **change) != _id(method="dpm")


def test_recipe_and_package_version_enter_the_identity(monkeypatch):
    base = _id(method="sp")
    lr = SMOKE.with_(finetune=SMOKE.finetune.__class__(**{**vars(SMOKE.finetune), "lr": 0.02}))
    assert resolve(RunSpec(profile=lr, method="sp")).run_id != base
    dense = SMOKE.with_(dense=SMOKE.dense.with_epochs(2))
    assert resolve(RunSpec(profile=dense, method="sp")).run_id != base
    monkeypatch.setattr("dpm_lab.experiments.runspec.__version__", "9.9.9")
    assert _id(method="sp") != base


def test_seeds_share_a_comparable_id_and_nothing_else_does():
    a, b = (resolve(RunSpec(profile=SMOKE, method="dpm", seed=s)).config for s in (0, 1))
    c = resolve(RunSpec(profile=SMOKE, method="dpm", window=3)).config
    assert comparable_id(a) == comparable_id(b) != comparable_id(c)


@pytest.mark.parametrize("spec, flag, why", [
    (dict(host="otov2", criterion="l1"), "--criterion", "ranks groups itself"),
    (dict(host="depgraph", criterion="taylor"), "--criterion", "group L2 magnitude"),
    (dict(method="sp", t_rate=0.1), "--t-rate", "only to --method dpm"),
    (dict(method="single-step", decay_steps=5), "--decay-steps", "only to --method sp and dpm"),
    (dict(method="single-step", prune_phase=0.3), "--prune-phase", "sp and dpm"),
    (dict(host="otov2", prune_phase=0.3), "--prune-phase", "no selection rounds"),
    (dict(host="depgraph", target_macs=0.5), "--target-macs", "--speedup"),
    (dict(host="otov2", speedup=2.0), "--speedup", "DepGraph"),
    (dict(host="core", target_sparsity=0.5), "--target-sparsity", "OTOv2"),
    (dict(method="dpm", calibration_batches=2), "--calibration-batches", "taylor only"),
    (dict(host="depgraph", method="host", window=3), "--window", "only to --method dpm"),
    (dict(host="otov2", method="sp", released="leave"), "--released", "only to --method dpm"),
    (dict(host="core", lasso_while_decaying=False), "--lasso-while-decaying", "--host otov2"),
    (dict(host="otov2", method="host", l_init_at="trial"), "--l-init-at", "--method sp or dpm"),
    (dict(host="otov2", method="host", decay_steps=3), "--decay-steps", "sp and dpm"),
    (dict(method="tpp", criterion="l1"), "--criterion", "by their L1 norm"),
    (dict(method="tpp+dpm", target_macs=0.5), "--target-macs", "--layer-ratio"),
    (dict(method="tpp", decay_steps=3), "--decay-steps", "tpp+dpm"),
    (dict(method="tpp", window=3), "--window", "dpm and tpp+dpm"),
    (dict(method="dpm", layer_ratio=0.5), "--layer-ratio", "TPP's target"),
    (dict(host="otov2", method="host", layer_ratio=0.5), "--layer-ratio", "TPP's target"),
])
def test_options_that_do_not_apply_are_refused_with_the_reason(spec, flag, why):
    with pytest.raises(ValueError) as err:
        resolve(RunSpec(profile=SMOKE, **spec))
    assert flag in str(err.value) and why in str(err.value)


@pytest.mark.parametrize("spec, bad", [
    (dict(host="magic"), "'magic'"), (dict(host="depgraph", method="single-step"), "'single-step'"),
    (dict(rule="most"), "'most'"), (dict(window=0), "0"), (dict(target_macs=1.5), "1.5"),
    (dict(target_macs=0.5, channel_ratio=0.3), "not both"), (dict(criterion="mag"), "'mag'"),
    (dict(host="depgraph", speedup=0.5), "0.5"), (dict(host="otov2", target_sparsity=1.2), "1.2"),
    (dict(method="tpp", layer_ratio=1.5), "1.5"),
    (dict(method="single-step", layer_ratio=0.5, target_macs=0.5), "not both --target-macs and --layer-ratio"),
    (dict(method="single-step", layer_ratio=0.5, criterion="l2"), "--criterion 'l2' does not apply"),
])
def test_bad_values_name_themselves(spec, bad):
    with pytest.raises(ValueError, match=bad.replace("(", r"\(").replace(".", r"\.")):
        resolve(RunSpec(profile=SMOKE, **spec))


def test_host_epochs_and_options_are_honoured():
    otov2 = resolve(RunSpec(profile=SMOKE, host="otov2", method="host", epochs=5))
    assert otov2.config["train"]["epochs"] == 5 and otov2.recipe.train.epochs == 5
    dg = resolve(RunSpec(profile=SMOKE, host="depgraph", method="dpm", prune_phase=0.25,
                         decay_steps=3, sparse_learning=False, epochs=4))
    assert (dg.recipe.prune_phase, dg.recipe.decay_steps, dg.recipe.sparse_learning) == (0.25, 3, None)
    assert dg.recipe.finetune.epochs == 4 == dg.config["train"]["epochs"]
    paper = resolve(RunSpec(profile="paper", method="sp", epochs=50))
    assert tuple(paper.config["train"]["milestones"]) == (30, 40)  # 60/80 of 100, scaled


def test_grid_and_describe():
    specs = grid(RunSpec(profile=SMOKE), method=["sp", "dpm"], seed=[0, 1])
    assert [(s.method, s.seed) for s in specs] == [("sp", 0), ("sp", 1), ("dpm", 0), ("dpm", 1)]
    with pytest.raises(ValueError, match="'tau'"):
        grid(tau=[1])
    d = describe(resolve(RunSpec(profile=SMOKE, method="dpm", window=3)).config)
    assert (d["method"], d["target"], d["window"], d["N"]) == ("dpm", "MACs 0.5", 3, SMOKE.decay_steps)


def test_a_changed_option_starts_a_new_run_and_an_equal_one_is_reused(tmp_path):
    """End to end on the smoke profile: t_rate, window, epochs and the recipe each lead to a new
    record; asking again for a finished configuration returns its record untouched."""
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs", device="cpu",
                progress=False)
    base = RunSpec(profile=SMOKE, method="dpm")
    first = run(base, **dirs)
    assert run(base, **dirs) == first                    # same configuration: read back
    lr = SMOKE.finetune.__class__(**{**vars(SMOKE.finetune), "lr": 0.02})
    changed = [base.replace(t_rate=0.1), base.replace(window=3), base.replace(epochs=3),
               base.replace(profile=SMOKE.with_(finetune=lr))]
    ids = {first["run_id"]}
    for spec in changed:
        path, _ = run_paths(spec, tmp_path / "res", tmp_path / "runs")
        assert not path.exists()                         # nothing to reuse
        record = run(spec, **dirs)
        assert record["run_id"] not in ids and path.exists()
        ids.add(record["run_id"])
    assert record["config"]["train"]["lr"] == 0.02
    assert len(list((tmp_path / "res").rglob("*_core_*.json"))) == 5
    dense = list((tmp_path / "res").rglob("dense/*.json"))
    assert len(dense) == 1                               # every run started from one dense model


@pytest.mark.parametrize("deviation", [dict(lasso_while_decaying=False), dict(l_init_at="trial"),
                                       dict(released="replace"), dict(released="leave")])
def test_otov2_deviations_enter_the_identity(deviation):
    base = resolve(RunSpec(profile=SMOKE, host="otov2", method="dpm"))
    assert (base.recipe.lasso_while_decaying, base.recipe.l_init_at, base.recipe.released) == \
        (True, "projection", "stay")                     # OTOv2's behaviour unless asked
    changed = resolve(RunSpec(profile=SMOKE, host="otov2", method="dpm", **deviation))
    assert changed.run_id != base.run_id
    host = resolve(RunSpec(profile=SMOKE, host="otov2", method="host")).config["options"]
    assert not {"decay_steps", "released", "l_init_at", "lasso_while_decaying"} & set(host)

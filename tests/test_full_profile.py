"""The ``full`` profile (issue 25): all of CIFAR-10, the official pixels where a complete copy is
found, else the JPEG copy, else one clear error naming both; its runs and records name the data
they really use. The dense recipe a run starts from can be varied (``dense_epochs``,
``dense_lr``), so that the recipe search is an experiment file; and the methods of a seed in
``configs/full`` share one dense checkpoint. Nothing here trains or reads pixels: the data roots
are a temporary folder holding empty files with the datasets' names."""
import subprocess
import sys
from pathlib import Path

import pytest
from torchvision import datasets

from dpm_lab.experiments.cli import _sweep_specs
from dpm_lab.experiments.experiment_file import load_experiment
from dpm_lab.experiments.identity import config_hash, dense_config
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.runner import run_paths
from dpm_lab.experiments.runspec import RunSpec, describe, resolve, sr_defaults
from dpm_lab.hosts.depgraph.recipe import depgraph_recipe
from dpm_lab.training.data import JPEG_FILE, DatasetNotFoundError, data_roots, dataset_label

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "configs" / "full"
OFFICIAL = [f for f, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list] + \
    [datasets.CIFAR10.meta["filename"]]


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty folder that is the only data root holding anything: the working directory and
    ``$DPM_LAB_HOME`` are in ``tmp_path``, ``$DPM_LAB_DATA`` is unset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    monkeypatch.delenv("DPM_LAB_DATA", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    found = [r for r in data_roots() if r != root and r.exists() and any(r.iterdir())]
    assert not found, f"data roots outside the test's folder hold files: {found}"
    return root


def _official(root: Path, files=OFFICIAL) -> None:
    (root / "cifar-10-batches-py").mkdir()
    for name in files:
        (root / "cifar-10-batches-py" / name).touch()


def test_full_takes_the_jpeg_copy_when_only_it_is_found_and_its_runs_say_so(data_root):
    (data_root / JPEG_FILE).touch()
    _official(data_root, OFFICIAL[:-1])  # an incomplete official folder is passed over
    assert get_profile("full").dataset == "cifar10-jpeg"
    res = resolve(RunSpec(profile="full", method="dpm", seed=3))
    assert res.config["data"]["dataset"] == "cifar10-jpeg"
    record, _ = run_paths(res)
    assert record.parent.parts[-2:] == ("full", "core")
    assert record.name.startswith("resnet20_cifar10-jpeg_core_dpm_s3_")
    assert dataset_label(res.profile.dataset) == "CIFAR-10 (JPEG q75)"


def test_full_takes_the_official_pixels_where_a_complete_copy_is_found(data_root):
    (data_root / JPEG_FILE).touch()
    _official(data_root)
    assert get_profile("full").dataset == "cifar10"
    assert resolve(RunSpec(profile="full", method="sp")).config["data"]["dataset"] == "cifar10"


def test_full_without_either_is_one_clear_error_naming_both(data_root, tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        get_profile("full")
    text = str(err.value)
    for part in ("(official, dataset cifar10)", "(dataset cifar10-jpeg)",
                 "python -m dpm_lab download cifar10", str(data_root / "cifar-10-batches-py"), str(data_root / JPEG_FILE),
                 "--data-root DIR"):
        assert part in text, part
    out = subprocess.run([sys.executable, "-m", "dpm_lab", "run", "--profile", "full"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("python -m dpm_lab: error: Neither CIFAR-10 (official, dataset "
                                 "cifar10) nor CIFAR-10 (JPEG q75)")


def test_n_and_window_are_chosen_and_depgraph_learns_sparsity_as_long_as_it_fine_tunes(
        data_root):
    (data_root / JPEG_FILE).touch()
    p = get_profile("full")
    assert "fine-tuning budget, bf16, N and window chosen on validation" in p.notes
    assert p.precision == "bf16"  # configs/full/precision_check.toml's rule adopted it
    # configs/full/sr_search.toml kept the defaults (results/reference/recipe-search/full/core)
    assert p.self_rectifying == {"window": 10} and sr_defaults(p)["window"] == 10
    assert (p.finetune.epochs, p.finetune.lr) == (10, 0.1)
    assert (p.dense.epochs, p.dense.lr, p.dense.schedule) == (30, 0.2, "onecycle")
    assert (p.model, p.batch_size, p.val_fraction, p.decay_steps) == ("resnet20", 128, 0.0, 780)
    r = depgraph_recipe(p)
    assert r.sparse_learning.epochs == p.finetune.epochs and r.finetune == p.finetune
    assert r.decay_steps == p.decay_steps


def test_dense_epochs_and_lr_change_the_dense_checkpoint_every_method_starts_from():
    base = RunSpec(profile="paper", seed=1)  # paper: multistep, so the milestones must scale
    default = resolve(base)
    ss, dpm = (resolve(base.replace(method=m, dense_epochs=100, dense_lr=0.05))
               for m in ("single-step", "dpm"))
    for res in (ss, dpm):
        assert (res.profile.dense.epochs, res.profile.dense.lr) == (100, 0.05)
        assert res.profile.dense.milestones == (60, 75, 90)  # 120/150/180 of 200
        assert res.config["dense"]["epochs"] == 100 and res.config["dense"]["lr"] == 0.05
        assert res.train == default.train  # the pruning phase is unchanged
        assert (describe(res.config)["dense_epochs"], describe(res.config)["dense_lr"]) == \
            (100, 0.05)
    shared = {config_hash(dense_config(r.profile, 1)) for r in (ss, dpm)}
    assert len(shared) == 1 and shared != {config_hash(dense_config(default.profile, 1))}
    assert ss.run_id != resolve(base.replace(method="single-step")).run_id


def test_dense_options_are_refused_where_a_run_starts_from_no_dense_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"--dense-epochs and --dense-lr do not apply to --host "
                                         r"otov2 with the paper recipe of vgg16_bn: it starts "
                                         r"from scratch, not from a dense checkpoint"):
        resolve(RunSpec(host="otov2", method="host", profile="paper", dense_lr=0.1))
    bad = tmp_path / "bad.toml"
    bad.write_text('profile = "mini"\ndense_epochs = [10, 0]\n')
    with pytest.raises(ValueError, match=r"bad.toml: field dense_epochs: '0' is not an integer "
                                         r">= 1"):
        load_experiment(bad)


def test_the_full_files_choose_on_validation_and_share_one_dense_checkpoint_per_seed(data_root):
    (data_root / JPEG_FILE).touch()
    runs = {f.stem: [resolve(s) for s in _sweep_specs(load_experiment(f), sweep=True)]
            for f in sorted(FULL.glob("*.toml"))}
    assert set(runs) == {"recipe_search", "sr_search", "precision_check", "core_comparison",
                         "depgraph_resnet20"}
    for f in FULL.glob("*.toml"):  # the profile names the data when it is built
        assert "dataset" not in load_experiment(f), f.name

    def dense(res):
        return config_hash(dense_config(res.profile, res.config["seed"]))

    searches = runs["recipe_search"] + runs["sr_search"] + runs["precision_check"]
    assert {r.config["data"]["val_fraction"] for r in searches} == {0.1}
    assert len({dense(r) for r in runs["recipe_search"]}) == 3 * 2  # the candidates
    assert {r.profile.precision for r in runs["recipe_search"]} == {"fp32"}  # as it ran
    # the precision check pairs 3 seeds x 2 precisions; its fp32 seed 0 is the search's run
    checked = {dense(r): r for r in runs["precision_check"]}
    assert len(checked) == 3 * 2
    seed0 = {p: {dense(r) for r in runs["precision_check"]
                 if r.config["seed"] == 0 and r.profile.precision == p} for p in ("fp32", "bf16")}
    assert len(seed0["fp32"]) == 1 and seed0["fp32"] <= {dense(r) for r in runs["recipe_search"]}
    # N and the window are searched in the profile's precision, from the check's bf16 seed 0
    assert {r.profile.precision for r in runs["sr_search"]} == {"bf16"}
    assert {dense(r) for r in runs["sr_search"]} == seed0["bf16"]
    # the search's 12 committed records are its runs as the profile resolves them now: the
    # choice it made (N 780, window 10, the values the profile had) changed no run id
    searched = ROOT / "results" / "reference" / "recipe-search" / "full" / "core"
    assert {run_paths(r)[0].name for r in runs["sr_search"]} == {
        p.name for p in searched.glob("*_core_[ds]p*_s0_*.json")}
    chosen = [r for r in runs["sr_search"] if r.config["method"] == "dpm"
              and r.config["options"]["decay_steps"] == 780
              and r.config["options"]["self_rectifying"]["window"] == 10]
    plain = resolve(RunSpec(profile="full", method="dpm", target_macs=0.25, val_fraction=0.1))
    assert [r.run_id for r in chosen] == [plain.run_id]
    compared = runs["core_comparison"] + runs["depgraph_resnet20"]
    assert {r.config["data"]["val_fraction"] for r in compared} == {0.0}
    assert {r.profile.precision for r in compared} == {"bf16"}
    assert {(r.config["host"], r.config["method"]) for r in compared} == {
        ("core", "single-step"), ("core", "sp"), ("core", "dpm"), ("core", "iterative"),
        ("depgraph", "host"), ("depgraph", "sp"), ("depgraph", "dpm")}
    for seed in range(5):
        of_seed = [r for r in compared if r.config["seed"] == seed]
        assert len(of_seed) == 4 * 3 + 3 and len({dense(r) for r in of_seed}) == 1

"""tools/carry_runs.py: a sweep carried to a fresh home through the repository goes on there with
the same dense weights and the epochs already trained."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from dpm_lab.errors import DpmLabError
from dpm_lab.experiments import runner
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.results import make_record, provenance
from dpm_lab.training.engine import cpu_model

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "carry_runs.py"
_spec = importlib.util.spec_from_file_location("carry_runs", _TOOL)
carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry)


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _home(root: Path) -> Path:
    """A sweep's home: a finished dense model, a finished sparse-learning phase, a finished
    pruning run, one killed between writing its weights and its record, and one half done."""
    runs, results = root / "runs" / "full", root / "results" / "full"
    _write(runs / "dense" / "d0" / "model.pt", "dense weights")
    _write(runs / "dense" / "d0" / "train.ckpt", "dense resume state")
    _write(results / "dense" / "d0.json", "dense record")
    _write(runs / "depgraph" / "sl_a" / "model.pt", "sparse weights")
    _write(runs / "depgraph" / "sl_a" / "history.json", "[]")
    _write(runs / "depgraph" / "sl_a" / "train.ckpt", "sl resume state")
    _write(runs / "core" / "done" / "model.pt", "pruned model")
    _write(runs / "core" / "done" / "finetune.ckpt", "finished resume state")
    _write(results / "core" / "done.json", "record")
    _write(runs / "core" / "killed" / "model.pt", "pruned model, no record yet")
    _write(runs / "core" / "killed" / "finetune.ckpt", "epoch 10 of 10")
    _write(runs / "core" / "half" / "finetune.ckpt", "epoch 4 of 10")
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_carries_shared_phases_and_unfinished_runs_only(tmp_path):
    home = _home(tmp_path / "a")
    # a home that is a clone of the repository holds the committed records too: not this sweep's
    _write(home / "results" / "reference" / "mini" / "core" / "x.json", "committed record")
    _write(home / "results" / "reference" / "bench" / "cpu_speed.json", "benchmark")
    reference, checkpoints = tmp_path / "reference", tmp_path / "checkpoints"
    carry.save(home, reference, checkpoints)
    assert _files(checkpoints) == [
        "full/core/half/finetune.ckpt", "full/core/killed/finetune.ckpt",
        "full/dense/d0/model.pt", "full/dense/d0/record.json",
        "full/depgraph/sl_a/history.json", "full/depgraph/sl_a/model.pt"]
    assert _files(reference) == ["full/core/done.json", "full/dense/d0.json"]

    # another sweep's fresh home, with its own (empty) reference folder: the dense model comes
    # with its record, so the runner reuses it
    fresh = tmp_path / "b"
    fresh.mkdir()
    carry.restore(fresh, tmp_path / "other-reference", checkpoints)
    assert _files(fresh) == [
        "results/full/dense/d0.json", "runs/full/core/half/finetune.ckpt",
        "runs/full/core/killed/finetune.ckpt", "runs/full/dense/d0/model.pt",
        "runs/full/depgraph/sl_a/history.json",
        "runs/full/depgraph/sl_a/model.pt"]
    assert (fresh / "results/full/dense/d0.json").read_text() == "dense record"
    carry.save(fresh, tmp_path / "other-reference", checkpoints)  # not copied as its record
    assert not (tmp_path / "other-reference").exists()
    assert (fresh / "runs/full/core/half/finetune.ckpt").read_text() == "epoch 4 of 10"

    # a home that went on after the save keeps its newer resume state
    _write(home / "runs" / "full" / "core" / "half" / "finetune.ckpt", "epoch 7 of 10")
    carry.restore(home, reference, checkpoints)
    assert (home / "runs/full/core/half/finetune.ckpt").read_text() == "epoch 7 of 10"

    # runs finish on the new machine (one of them recorded in this sweep's reference folder by
    # another home): their carried resume checkpoints are dropped
    _write(fresh / "results" / "full" / "core" / "half.json", "record")
    _write(tmp_path / "other-reference" / "full" / "core" / "killed.json", "record")
    carry.save(fresh, tmp_path / "other-reference", checkpoints)
    assert not list(checkpoints.rglob("*.ckpt"))


def test_refuses_to_change_a_carried_dense_model_or_a_committed_record(tmp_path):
    reference, checkpoints = tmp_path / "reference", tmp_path / "checkpoints"
    carry.save(_home(tmp_path / "a"), reference, checkpoints)
    other = _home(tmp_path / "b")
    _write(other / "runs" / "full" / "dense" / "d0" / "model.pt", "other dense weights")
    _write(other / "results" / "full" / "core" / "done.json", "another record")
    with pytest.raises(SystemExit) as e:
        carry.save(other, reference, checkpoints)
    assert "full/dense/d0/model.pt" in str(e.value) and "full/core/done.json" in str(e.value)
    assert (checkpoints / "full/dense/d0/model.pt").read_text() == "dense weights"
    carry.save(other, reference, checkpoints, force=True)
    assert (checkpoints / "full/dense/d0/model.pt").read_text() == "other dense weights"
    with pytest.raises(SystemExit, match="inside the home's results folder"):
        carry.save(other, other / "results" / "reference", checkpoints)


def test_restored_dense_model_is_reused_not_retrained(tmp_path, monkeypatch):
    profile = get_profile("smoke").with_(dataset="synthetic")
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    model_a, record_a = runner.train_dense(profile, 0, device="cpu", progress=False,
                                           results_dir=home_a / "results", runs_dir=home_a / "runs")
    checkpoints = tmp_path / "checkpoints"
    carry.save(home_a, tmp_path / "reference", checkpoints)
    home_b.mkdir()
    carry.restore(home_b, tmp_path / "another-sweeps-reference", checkpoints)

    def no_training(*args, **kwargs):
        pytest.fail("the carried dense model was trained again")
    monkeypatch.setattr(runner, "_train_dense", no_training)
    model_b, record_b = runner.train_dense(profile, 0, device="cpu", progress=False,
                                           results_dir=home_b / "results", runs_dir=home_b / "runs")
    assert record_b == record_a
    assert {(h["cpu"], h["threads"]) for h in record_a["history"]} == \
        {(cpu_model(), torch.get_num_threads())} and "trained_on" not in record_a
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_dense_model_trained_again_must_repeat_its_record(tmp_path):
    """A fresh machine given the committed records but not the weights trains the dense model
    again: kept when the training repeats the recorded one bit for bit (same machine), refused
    when it differs, since the seed's recorded pruning runs started from the recorded weights;
    stopped at the first epoch that departs, not after the last."""
    smoke = get_profile("smoke")
    profile = smoke.with_(dataset="synthetic", dense=dataclasses.replace(smoke.dense, epochs=2))
    dirs = {"results_dir": tmp_path / "results", "runs_dir": tmp_path / "runs"}
    model_a, record = runner.train_dense(profile, 0, device="cpu", progress=False, **dirs)
    run = tmp_path / "runs" / "smoke" / "dense"
    (weights,) = run.glob("*/model.pt")
    weights.unlink()
    for ckpt in run.glob("*/*.ckpt"):
        ckpt.unlink()
    (record_file,) = (tmp_path / "results" / "smoke" / "dense").glob("*.json")
    committed = record_file.read_bytes()
    model_b, again = runner.train_dense(profile, 0, device="cpu", progress=False, **dirs)
    assert again == record and record_file.read_bytes() == committed  # the record stays as is
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name

    other = json.loads(record_file.read_text())
    other["history"][0]["train_loss"] += 1e-9  # as if recorded on another machine
    record_file.write_text(json.dumps(other))
    weights.unlink()
    for ckpt in run.glob("*/*.ckpt"):
        ckpt.unlink()
    with pytest.raises(DpmLabError, match="departs from the recorded one at epoch 1 "):
        runner.train_dense(profile, 0, device="cpu", progress=False, **dirs)
    assert not weights.exists() and json.loads(record_file.read_text()) == other
    assert not list(run.glob("*/*.ckpt"))  # stopped before the departing epoch's checkpoint


def test_a_reference_folder_named_after_its_profile(tmp_path):
    """``results/reference/full`` holds ``<kind>/<name>.json``, without the profile folder."""
    home, reference = _home(tmp_path / "a"), tmp_path / "reference" / "full"
    _write(home / "results" / "mini" / "core" / "m.json", "a mini record")
    carry.save(home, reference, tmp_path / "checkpoints")
    assert _files(reference) == ["core/done.json", "dense/d0.json"]
    fresh = tmp_path / "b"
    fresh.mkdir()
    carry.restore(fresh, reference, tmp_path / "no-checkpoints")
    assert _files(fresh) == ["results/full/core/done.json", "results/full/dense/d0.json"]


def test_a_dense_model_being_trained_again_carries_its_resume_state(tmp_path):
    """Restored from the committed records without its weights, a dense model trains again over
    sessions: its resume checkpoint travels, and its committed record does not count as done."""
    home, reference = tmp_path / "a", tmp_path / "reference" / "full"
    _write(reference / "dense" / "d1.json", "committed dense record")
    home.mkdir()
    carry.restore(home, reference, tmp_path / "checkpoints")
    _write(home / "runs" / "full" / "dense" / "d1" / "train.ckpt", "epoch 12 of 30")
    for _ in range(2):  # the second save must not drop it either
        carry.save(home, reference, tmp_path / "checkpoints")
        assert _files(tmp_path / "checkpoints") == ["full/dense/d1/train.ckpt"]
    assert (reference / "dense" / "d1.json").read_text() == "committed dense record"


def test_refuses_a_home_that_is_not_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        carry.main(["save", "--home", str(tmp_path / "missing"), "--reference", str(tmp_path)])
    assert e.value.code == 2
    assert "missing is not a folder" in capsys.readouterr().err


def test_a_run_resumed_on_another_machine_names_every_machine():
    def epoch(n, cpu, threads):
        return {"epoch": n, "test_acc": 50.0, "cpu": cpu, "threads": threads}
    history = [{"epoch": 1, "test_acc": 40.0},  # written before epochs named their machine
               epoch(2, "CPU A", 1), epoch(3, "CPU A", 1), epoch(4, "CPU B", 1), epoch(5, "CPU B", 2)]
    record = make_record("dense", config={"a": 1}, profile="full", seed=0, dataset="d", model="m",
                         history=history, macs=1, params=1, wall_time_s=1.0)
    assert record["trained_on"] == [{"from_epoch": 2, "cpu": "CPU A", "threads": 1},
                                    {"from_epoch": 4, "cpu": "CPU B", "threads": 1},
                                    {"from_epoch": 5, "cpu": "CPU B", "threads": 2}]
    row = provenance([record]).iloc[0]
    assert (row["cpu"], row["threads"]) == ("CPU A + CPU B + CPU B", "1 + 1 + 2")
    one_machine = make_record("dense", config={"a": 1}, profile="full", seed=0, dataset="d",
                              model="m", history=history[:3], macs=1, params=1, wall_time_s=1.0)
    assert "trained_on" not in one_machine

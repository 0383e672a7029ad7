"""tools/carry_runs.py: a sweep carried to a fresh home through the repository goes on there with
the same dense weights and the epochs already trained."""
import importlib.util
from pathlib import Path

import pytest
import torch

from dpm_lab.experiments import runner
from dpm_lab.experiments.profiles import get_profile

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "carry_runs.py"
_spec = importlib.util.spec_from_file_location("carry_runs", _TOOL)
carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry)


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _home(root: Path) -> Path:
    """A sweep's home: a finished dense model, a finished sparse-learning phase, a finished and
    an unfinished pruning run."""
    runs = root / "runs" / "full"
    _write(runs / "dense" / "d0" / "model.pt", "dense weights")
    _write(runs / "dense" / "d0" / "train.ckpt", "dense resume state")
    _write(runs / "depgraph" / "sl_a" / "model.pt", "sparse weights")
    _write(runs / "depgraph" / "sl_a" / "history.json", "[]")
    _write(runs / "depgraph" / "sl_a" / "train.ckpt", "sl resume state")
    _write(runs / "core" / "done" / "model.pt", "pruned model")
    _write(runs / "core" / "done" / "finetune.ckpt", "finished resume state")
    _write(runs / "core" / "half" / "finetune.ckpt", "epoch 4 of 10")
    _write(root / "results" / "full" / "core" / "done.json", "{}")
    _write(root / "results" / "full" / "dense" / "d0.json", "{}")
    return root


def test_carries_shared_weights_and_unfinished_runs_only(tmp_path):
    home = _home(tmp_path / "a")
    assert [str(p) for p in carry.carried_files(home / "runs")] == [
        "full/core/half/finetune.ckpt", "full/dense/d0/model.pt",
        "full/depgraph/sl_a/model.pt", "full/depgraph/sl_a/history.json"]
    reference, checkpoints = tmp_path / "reference", tmp_path / "checkpoints"
    carry.save(home, reference, checkpoints)
    assert sorted(str(p.relative_to(checkpoints)) for p in checkpoints.rglob("*") if p.is_file()) \
        == ["full/core/half/finetune.ckpt", "full/dense/d0/model.pt",
            "full/depgraph/sl_a/history.json", "full/depgraph/sl_a/model.pt"]
    assert sorted(str(p.relative_to(reference)) for p in reference.rglob("*.json")) == \
        ["full/core/done.json", "full/dense/d0.json"]

    fresh = tmp_path / "b"
    fresh.mkdir()
    carry.restore(fresh, reference, checkpoints)
    for rel in ["runs/full/core/half/finetune.ckpt", "runs/full/dense/d0/model.pt",
                "results/full/core/done.json"]:
        assert (fresh / rel).read_bytes() == (home / rel).read_bytes()
    assert sorted(p.name for p in (fresh / "runs").rglob("*") if p.is_file()) == \
        ["finetune.ckpt", "history.json", "model.pt", "model.pt"]

    # a home that went on after the save keeps its newer resume state
    _write(home / "runs" / "full" / "core" / "half" / "finetune.ckpt", "epoch 7 of 10")
    carry.restore(home, reference, checkpoints)
    assert (home / "runs" / "full" / "core" / "half" / "finetune.ckpt").read_text() == "epoch 7 of 10"

    # the run finishes on the new machine: its carried resume checkpoint is dropped, another
    # sweep's in-flight checkpoint (a run this home does not have) is kept
    _write(fresh / "runs" / "full" / "core" / "half" / "model.pt", "pruned model")
    _write(checkpoints / "full" / "core" / "other" / "finetune.ckpt", "another sweep's run")
    carry.save(fresh, reference, checkpoints)
    assert not (checkpoints / "full" / "core" / "half" / "finetune.ckpt").exists()
    assert (checkpoints / "full" / "core" / "other" / "finetune.ckpt").exists()


def test_restored_dense_model_is_reused_not_retrained(tmp_path, monkeypatch):
    profile = get_profile("smoke").with_(dataset="synthetic")
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    model_a, record_a = runner.train_dense(profile, 0, device="cpu", progress=False,
                                           results_dir=home_a / "results", runs_dir=home_a / "runs")
    reference, checkpoints = tmp_path / "reference", tmp_path / "checkpoints"
    carry.save(home_a, reference, checkpoints)
    home_b.mkdir()
    carry.restore(home_b, reference, checkpoints)

    def no_training(*args, **kwargs):
        pytest.fail("the carried dense model was trained again")
    monkeypatch.setattr(runner, "_train_dense", no_training)
    model_b, record_b = runner.train_dense(profile, 0, device="cpu", progress=False,
                                           results_dir=home_b / "results", runs_dir=home_b / "runs")
    assert record_b == record_a
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name


def test_refuses_a_home_that_is_not_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        carry.main(["save", "--home", str(tmp_path / "missing"), "--reference", str(tmp_path)])
    assert e.value.code == 2
    assert "missing is not a folder" in capsys.readouterr().err

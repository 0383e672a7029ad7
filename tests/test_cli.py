import json
import subprocess
import sys

import pytest

from dpm_lab.cli import main


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dpm_lab", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, bad, allowed", [
    (["train", "--model", "resnet9000"], "resnet9000", "resnet56"),
    (["train", "--epochs", "-3"], "-3", ">= 1"),
    (["train", "--data", "imagenet21k"], "imagenet21k", "cifar10-slice"),
    (["run", "--method", "magic"], "magic", "dpm"),
    (["run", "--target-macs", "1.5"], "1.5", "(0, 1]"),
    (["train", "--profile", "huge"], "huge", "smoke"),
    (["run", "--host", "magic"], "magic", "depgraph"),
    (["run", "--host", "depgraph", "--method", "single-step"], "single-step", "host, sp, dpm"),
    (["run", "--method", "host"], "'host'", "single-step, sp, dpm"),
    (["run", "--host", "otov2", "--criterion", "l1"], "--criterion", "ranks groups itself"),
    (["run", "--method", "sp", "--window", "5"], "--window", "only to --method dpm"),
    (["run", "--window", "0"], "'0'", ">= 1"),
    (["run", "--val-fraction", "1"], "'1'", "[0, 1)"),
    (["run", "--rate-reference", "grad"], "'grad'", "decay_step"),
    (["sweep", "--rule", "most"], "'most'", "all"),
    (["run", "--host", "otov2", "--target-sparsity", "1.5"], "1.5", "(0, 1)"),
    (["run", "--host", "depgraph", "--speedup", "0.5"], "0.5", "> 1"),
])
def test_bad_values_exit_2_with_one_line_naming_value_and_allowed(args, bad, allowed):
    r = _cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and bad in lines[0] and allowed in lines[0]


def test_help_documents_every_option():
    r = _cli("run", "--help")
    assert r.returncode == 0
    for opt in ("--method", "--target-macs", "--decay-steps", "--t-rate", "--t-len", "--rule",
                "--profile", "--seed", "--data-root", "--criterion", "--host", "--no-sl",
                "--speedup", "--target-sparsity", "--window", "--rate-reference", "--val-fraction",
                "--calibration-batches", "--epochs", "--prune-phase", "--sparse-learning"):
        assert opt in r.stdout


def test_train_smoke_writes_checkpoint_record_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    rc = main(["train", "--profile", "smoke", "--data", "synthetic", "--results-dir",
               str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 0
    rec = json.loads(next((tmp_path / "res").rglob("*.json")).read_text())
    assert rec["profile"] == "smoke" and rec["dataset"] == "synthetic" and len(rec["history"]) == 1
    assert next((tmp_path / "runs").rglob("model.pt")).exists()
    assert next((tmp_path / "figures").glob("*.png")).stat().st_size > 0
    assert "final top-1" in capsys.readouterr().out


def test_report_without_records_says_so_in_one_line(tmp_path):
    r = _cli("report", "--results-dir", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no mini-profile pruning records" in lines[0]


def test_sweep_varies_any_field_and_leaves_out_what_does_not_apply(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    argv = ["sweep", "--profile", "smoke", "--data", "synthetic", "--device", "cpu",
            "--method", "sp", "dpm", "--t-rate", "0.1", "0.5", "--seed", "0"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "--t-rate does not apply to --host core --method sp" in out.err
    records = sorted((tmp_path / "results" / "smoke" / "core").glob("*.json"))
    configs = [json.loads(p.read_text())["config"] for p in records]
    assert len(records) == 3                              # sp once, dpm at two thresholds
    assert sorted(c["options"].get("self_rectifying", {}).get("t_rate", -1) for c in configs) == \
        [-1, 0.1, 0.5]
    assert main(argv) == 0                                # finished: nothing new
    assert len(list((tmp_path / "results" / "smoke" / "core").glob("*.json"))) == 3
    assert main(["report", "--profile", "smoke"]) == 0
    table = capsys.readouterr().out
    assert "t_rate" in table and "revisions" in table

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
    (["train", "--data", "imagenet"], "imagenet", "cifar10-slice"),
    (["run", "--method", "magic"], "magic", "dpm"),
    (["run", "--target-macs", "1.5"], "1.5", "(0, 1]"),
    (["train", "--profile", "huge"], "huge", "smoke"),
    (["run", "--host", "magic"], "magic", "depgraph"),
    (["run", "--host", "depgraph", "--method", "single-step"], "single-step", "host, sp, dpm"),
    (["run", "--method", "host"], "host", "--host depgraph"),
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
                "--speedup", "--target-sparsity"):
        assert opt in r.stdout


def test_train_smoke_writes_checkpoint_record_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("dpm_lab.figures.FIGURES_DIR", tmp_path / "fig")
    rc = main(["train", "--profile", "smoke", "--data", "synthetic", "--results-dir",
               str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 0
    rec = json.loads(next((tmp_path / "res").rglob("*.json")).read_text())
    assert rec["profile"] == "smoke" and rec["dataset"] == "synthetic" and len(rec["history"]) == 1
    assert next((tmp_path / "runs").rglob("model.pt")).exists()
    assert next((tmp_path / "fig").glob("*.png")).stat().st_size > 0
    assert "final top-1" in capsys.readouterr().out


def test_report_without_records_says_so_in_one_line(tmp_path):
    r = _cli("report", "--results-dir", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no mini-profile records" in lines[0]

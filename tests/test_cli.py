import json
import os
import shutil
import subprocess
import sys

import pytest

from dpm_lab.experiments.cli import main


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


_FAILING_TRAIN = """
import sys
from dpm_lab.experiments import runner
from dpm_lab.experiments.cli import main

def train_dense(*args, **kwargs):
    raise {error}

runner.train_dense = train_dense
sys.exit(main([*sys.argv[1:], "train", "--profile", "smoke", "--data", "synthetic"]))
"""


def _train_failing_with(error: str, *flags, home):
    """``train`` whose dense training raises ``error`` (an expression), as a user sees it."""
    return subprocess.run([sys.executable, "-c", _FAILING_TRAIN.format(error=error), *flags],
                          capture_output=True, text=True, env={**os.environ, "DPM_LAB_HOME": home})


def test_an_unexpected_error_inside_a_command_shows_its_traceback(tmp_path):
    r = _train_failing_with('RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")',
                            home=str(tmp_path))
    assert r.returncode == 1                     # not reported as bad input
    assert "Traceback (most recent call last)" in r.stderr and "in train_dense" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.mark.parametrize("error", ['ValueError("bad value 7; allowed: 1, 2")',
                                   '__import__("dpm_lab.errors").errors.DpmLabError("bad value 7; '
                                   'allowed: 1, 2")'])
def test_bad_input_is_one_line_and_debug_adds_its_traceback(tmp_path, error):
    r = _train_failing_with(error, home=str(tmp_path))
    assert r.returncode == 2
    # the smoke profile says on stderr when it falls back to generated data (no slice found)
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith("dpm_lab: smoke profile:")]
    assert lines == ["python -m dpm_lab: error: bad value 7; allowed: 1, 2"]
    r = _train_failing_with(error, "--debug", home=str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "Traceback (most recent call last):" in lines and "in train_dense" in r.stderr
    assert lines[-1] == "python -m dpm_lab: error: bad value 7; allowed: 1, 2"


def test_debug_shows_the_traceback_of_a_bad_value_given_on_the_command_line():
    r = _cli("--debug", "run", "--method", "host")
    assert r.returncode == 2
    assert "Traceback (most recent call last):" in r.stderr
    assert "'host'" in r.stderr.strip().splitlines()[-1]


def _main_job_table(out: str) -> tuple[str, list[str], list[str]]:
    """The header and the two rows (dense, pruned; values after the model column) of the main
    job's table in ``out``."""
    lines = out.splitlines()
    h = next(i for i, line in enumerate(lines) if "top-1 (%)" in line)
    dense, pruned = lines[h + 1].strip(), lines[h + 2].strip()
    assert dense.startswith("dense ") and pruned.startswith("dpm to 0.5x MACs ")
    return lines[h], dense[len("dense"):].split(), pruned[len("dpm to 0.5x MACs"):].split()


def test_main_job_prunes_to_half_the_macs_prints_its_table_and_reuses_the_run(
        tmp_path, monkeypatch, capsys):
    """`make train`'s command, in the smoke profile: the run of `run --method dpm --target-macs
    0.5 --seed 0`, its record and figure written, and a table holding the record's numbers; a
    second call reads the run back instead of training."""
    from dpm_lab.experiments import runner
    from dpm_lab.experiments.runspec import RunSpec, resolve
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path))
    args = ["main-job", "--profile", "smoke", "--results-dir", str(tmp_path / "res"),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    out = capsys.readouterr().out
    path = next((tmp_path / "res").rglob("*_dpm_*.json"))
    rec = json.loads(path.read_text())
    assert rec["run_id"] == resolve(RunSpec(method="dpm", profile="smoke", target_macs=0.5)).run_id
    assert f"record: {path}" in out
    figure = next(line for line in out.splitlines() if line.startswith("figure: "))[8:]
    assert os.path.getsize(figure) > 0 and figure.startswith(str(tmp_path / "figures"))
    header, dense, pruned = _main_job_table(out)
    for column in ("MACs (M)", "MACs kept (%)", "params (M)", "params kept (%)", "releases"):
        assert column in header
    assert abs(float(dense[0]) - rec["dense_top1"]) <= 0.005 + 1e-9
    assert dense[2] == "100.0" and dense[4] == "100.0" and dense[5] == "-"
    assert abs(float(pruned[0]) - rec["final_top1"]) <= 0.005 + 1e-9
    assert abs(float(pruned[2]) - 100 * rec["macs_ratio"]) <= 0.05 + 1e-9
    assert abs(float(pruned[4]) - 100 * rec["params_ratio"]) <= 0.05 + 1e-9
    assert int(pruned[5]) == rec["released"]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the run is recorded")
    monkeypatch.setattr(runner, "fit", no_training)
    assert main(args) == 0
    assert _main_job_table(capsys.readouterr().out)[1:] == (dense, pruned)


def test_main_job_without_the_slice_or_network_fails_in_one_line_saying_how(tmp_path, offline,
                                                                             capsys):
    assert main(["main-job", "--profile", "mini"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cifar10_prefix_subset.npz" in lines[0]
    assert str(tmp_path / "env") in lines[0] and "name resolution" in lines[0]
    assert "python -m dpm_lab download cifar10-slice" in lines[0]
    assert not (tmp_path / "home" / "results").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_lists_its_targets_by_default_and_train_runs_the_main_job():
    """Only dry runs (``-n``) and ``help``: nothing is installed or trained, even on a
    regression."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def make(*args):
        return subprocess.run(["make", "-C", repo, "--no-print-directory", *args],
                              capture_output=True, text=True)
    assert make("-n").stdout == make("-n", "help").stdout  # help is the default target
    shown = make("help")
    assert shown.returncode == 0
    listed = {line.split()[1]: line for line in shown.stdout.splitlines()
              if line.strip().startswith("make ")}
    assert {"help", "train", "test", "lab"} <= set(listed)
    assert "DPM" in listed["train"] and "JupyterLab" in listed["lab"]
    train = make("-n", "train").stdout
    assert "-m dpm_lab main-job --profile mini --seed 0" in train
    lab = make("-n", "lab").stdout
    assert f'DPM_LAB_HOME="{repo}"' in lab and "--notebook-dir=notebooks" in lab


def test_run_help_lists_its_options_in_groups_with_examples():
    """Each host's options under its own heading, and examples to copy."""
    from dpm_lab.experiments.cli import OPTION_GROUPS, RUN_OPTIONS

    grouped = [d for _, dests in OPTION_GROUPS.values() for d in dests]
    assert sorted(grouped) == sorted(dest for _, dest, _ in RUN_OPTIONS)  # each once
    text = _cli("run", "--help").stdout
    headings = [text.index(f"\n{title}:") for title in OPTION_GROUPS]
    assert headings == sorted(headings)
    section = {title: text[start:end] for title, start, end in
               zip(OPTION_GROUPS, headings, headings[1:] + [text.index("\nexamples:")])}
    assert "--lasso-while-decaying" in section["OTOv2 (--host otov2)"]
    assert "--no-sl" in section["DepGraph (--host depgraph)"]
    assert "--t-rate" in section["Self-Rectifying (--method dpm, tpp+dpm)"]
    assert "--gate-decay" in section["Gate Decorator (--host gatedecorator)"]
    assert "--t-rate" not in section["common options"]
    assert "python -m dpm_lab run --host depgraph" in text[text.index("\nexamples:"):]


@pytest.mark.parametrize("args, meant", [
    (["run", "--t-rtae", "0.5"], "did you mean --t-rate?"),
    (["sweep", "--widnow", "3"], "did you mean --window?"),
    (["report", "--refrence"], "did you mean --reference?"),
    (["run", "--t-rtae", "0.5", "--lasso-whiel-decaying", "off", "--host", "otov2"],
     "--t-rate for --t-rtae, --lasso-while-decaying for --lasso-whiel-decaying?"),
])
def test_a_mistyped_option_is_answered_with_the_option_meant(args, meant):
    r = _cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unrecognized arguments" in lines[0] and meant in lines[0]


def test_an_option_close_to_nothing_gets_no_guess():
    r = _cli("run", "--zzzzzz")
    assert r.returncode == 2 and "did you mean" not in r.stderr


def test_a_bare_invocation_prints_the_usage_and_every_command():
    r = _cli()
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m dpm_lab")
    for command in ("train", "run", "sweep", "report", "figures", "main-job", "download"):
        assert f"\n    {command} " in r.stdout


def test_figures_writes_to_the_home_figures_folder_unless_told_reference(tmp_path):
    """The committed figures/reference is rewritten only with --reference."""
    from pathlib import Path

    from dpm_lab.experiments import cli

    drawn = []
    repo = Path(__file__).resolve().parent.parent
    env = {"DPM_LAB_HOME": str(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.chdir(repo)
        mp.setattr("dpm_lab.reporting.paper_figures.draw_all",
                   lambda source, out, profile: drawn.append(out) or ([], []))
        assert cli.main(["figures"]) == 0
        assert cli.main(["figures", "--reference"]) == 0
    # every reference profile, into the user's folder, then into the committed one
    assert drawn == [tmp_path / "figures"] * 2 + [repo / "figures" / "reference"] * 2


def test_report_prints_the_resolved_records_folder_and_no_empty_column(tmp_path):
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "dpm_lab", "report"], capture_output=True,
                       text=True, env={**os.environ, "DPM_LAB_HOME": str(home)})
    assert r.returncode == 2 and str(home / "results" / "mini") in r.stderr
    assert "$DPM_LAB_HOME" not in r.stderr

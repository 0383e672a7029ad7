"""Experiment files (configs/): every committed file loads and each of its runs resolves, so a
file cannot drift from the package unnoticed; a list is a grid axis, options beside a file
override it, and a bad file is refused in one line naming the file, the field and what is
allowed. Nothing here trains."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dpm_lab.experiments.cli import _given_axes, _run_spec, _sweep_specs, build_parser
from dpm_lab.experiments.experiment_file import load_experiment
from dpm_lab.experiments.runspec import resolve

from conftest import needs_whole_cifar10

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(CONFIGS.rglob("*.toml"))
PROFILE_OF_FOLDER = {"paper": "paper", "mini": "mini", "ablations": "mini", "full": "full"}
# the full profile names the whole-CIFAR-10 data it finds when it is built
FILE_PARAMS = [pytest.param(p, marks=needs_whole_cifar10 if p.parent.name == "full" else ())
               for p in FILES]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dpm_lab", *args], capture_output=True, text=True)


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text)
    return path


def test_there_are_paper_mini_full_and_ablation_files():
    assert {f.parent.name for f in FILES} == set(PROFILE_OF_FOLDER)


@pytest.mark.parametrize("path", FILE_PARAMS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_file_loads_and_every_run_resolves(path):
    axes = load_experiment(path)
    specs = _sweep_specs(axes, sweep=True)
    for spec in specs:
        resolve(spec)
    assert axes["profile"] == [PROFILE_OF_FOLDER[path.parent.name]]
    assert tomllib.loads(path.read_text())["description"].strip()
    for name in axes:  # a field that applies to none of the runs says nothing
        assert any(getattr(spec, name) is not None for spec in specs), name


def test_the_readme_lists_every_file():
    readme = (CONFIGS / "README.md").read_text()
    for path in FILES:
        assert f"`{path.relative_to(CONFIGS)}`" in readme


def test_a_list_is_a_grid_axis_and_a_value_a_one_element_list(tmp_path):
    path = _write(tmp_path, 'profile = "mini"\nmethod = ["sp", "dpm"]\n'
                            'decay_steps = [1, 21, 42]\nseed = [0, 1]\nt_len = 2\n')
    axes = load_experiment(path)
    assert axes == {"profile": ["mini"], "method": ["sp", "dpm"], "decay_steps": [1, 21, 42],
                    "seed": [0, 1], "t_len": [2.0]}
    specs = _sweep_specs(axes, sweep=True)
    assert len(specs) == 2 * 3 * 2
    assert {s.t_len for s in specs if s.method == "dpm"} == {2.0}


def test_options_beside_the_file_override_it(tmp_path):
    path = _write(tmp_path, 'profile = "mini"\nmethod = ["sp", "dpm"]\nt_rate = [0.1, 0.5]\n'
                            'seed = [0, 1, 2]\n')
    parser = build_parser()
    sweep = parser.parse_args(["sweep", str(path), "--seed", "7", "--t-rate", "0.25",
                               "--profile", "smoke"])
    specs = _sweep_specs(_given_axes(sweep), sweep=True)
    assert [(s.method, s.seed, s.t_rate, s.profile) for s in specs] == \
        [("sp", 7, None, "smoke"), ("dpm", 7, 0.25, "smoke")]
    run = parser.parse_args(["run", str(path), "--method", "dpm", "--seed", "1",
                             "--t-rate", "0.1"])
    spec = _run_spec(run)
    assert (spec.method, spec.seed, spec.t_rate, spec.profile) == ("dpm", 1, 0.1, "mini")


def test_an_error_of_a_run_names_the_file(tmp_path):
    path = _write(tmp_path, 'profile = "mini"\ntarget_macs = 0.5\nchannel_ratio = 0.3\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}: give only one of --target-macs")):
        _run_spec(build_parser().parse_args(["run", str(path)]))


def _one_error_line(result) -> str:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_run_refuses_a_file_of_several_runs(tmp_path):
    path = _write(tmp_path, 'profile = "mini"\nmethod = ["sp", "dpm"]\nseed = [0, 1]\n')
    line = _one_error_line(_cli("run", str(path)))
    assert str(path) in line and "4 runs" in line and "method, seed" in line and "sweep" in line


@pytest.mark.parametrize("text, field, allowed", [
    ("tau = 1\n", "'tau'", "decay_steps, t_rate"),
    ('rule = ["all", "most"]\n', "rule", "choose one of: all, any"),
    ("decay_steps = 0\n", "decay_steps", "an integer >= 1"),
])
def test_a_bad_field_gives_one_line_naming_it_the_file_and_what_is_allowed(tmp_path, text,
                                                                            field, allowed):
    path = _write(tmp_path, 'profile = "mini"\n' + text)
    line = _one_error_line(_cli("sweep", str(path)))
    assert str(path) in line and field in line and allowed in line


@pytest.mark.parametrize("text, meant", [
    ("t_rtae = 0.5\n", "'t_rate'"),          # a typo of a field
    ("targets = 0.5\n", "'target_macs'"),    # the field's command-line option
    ("t-rate = 0.5\n", "'t_rate'"),
])
def test_a_mistyped_field_is_answered_with_the_field_meant(tmp_path, text, meant):
    path = _write(tmp_path, 'profile = "mini"\n' + text)
    line = _one_error_line(_cli("sweep", str(path)))
    assert f"did you mean {meant}?" in line and "allowed fields:" in line


def test_a_field_close_to_nothing_gets_no_guess(tmp_path):
    line = _one_error_line(_cli("sweep", str(_write(tmp_path, "zzz = 1\n"))))
    assert "'zzz'" in line and "did you mean" not in line

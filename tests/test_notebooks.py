"""The notebooks' shape (nbval runs them; this checks what running cannot): each one's first
code cell is its parameters cell, tagged for papermill, and holds literals only. Papermill
injects its values in a cell *after* that one, so a value computed inside it would be computed
from the defaults and kept: ``papermill -p PROFILE smoke`` would silently run mini. One notebook
runs through papermill to show that the parameter, not the environment, picks the profile.
Stored outputs, where a notebook has them, come from one complete run without errors."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpm_lab.reporting.notebook import setup

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_first_and_literals_only(path):
    params = _code_cells(path)[0]
    assert "parameters" in params["metadata"].get("tags", [])
    names = []
    for statement in ast.parse("".join(params["source"])).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, \
            f"not a plain assignment: {ast.unparse(statement)}"
        ast.literal_eval(statement.value)  # raises ValueError on anything computed
        names.append(statement.targets[0].id)
    assert "PROFILE" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_come_from_one_clean_run(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    # an injected cell would pin its values for every later run (nbval, Jupyter)
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in cells)
    if all(c["outputs"] == [] and c["execution_count"] is None for c in code):
        return  # not executed
    counts = [c["execution_count"] for c in code]
    assert None not in counts and counts == sorted(set(counts)), counts
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]


def test_papermill_parameter_selects_the_profile(tmp_path):
    """``-p PROFILE smoke`` with ``$DPM_LAB_PROFILE`` unset runs the quickstart in smoke. It runs
    in an empty folder that is also ``$DPM_LAB_HOME``, with no dataset in reach: smoke falls back
    to generated data and writes its records to throw-away folders, while mini (the default)
    would stop for the missing CIFAR-10 slice or write under ``results/``."""
    notebook = next(p for p in NOTEBOOKS if p.name.startswith("00_"))
    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DPM_LAB_PROFILE", "DPM_LAB_DATA", "DPM_LAB_REFERENCE")}
    env.update(DPM_LAB_HOME=str(tmp_path), MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-m", "papermill", str(notebook), str(out), "-p",
                          "PROFILE", "smoke", "--cwd", str(tmp_path), "--no-progress-bar"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    stdout = ["".join(o.get("text", "")) for c in _code_cells(out) for o in c["outputs"]
              if o.get("name") == "stdout"]
    assert stdout[0].startswith("profile smoke"), stdout[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_setup_per_profile_values_and_output_folders(capsys):
    smoke, mini = setup("smoke"), setup("mini")
    assert capsys.readouterr().out.startswith("profile smoke")
    assert smoke.per_profile({"smoke": 1, "mini": 15}) == 1 and smoke.per_profile([1, 3]) == [1, 3]
    with pytest.raises(ValueError, match="no value for profile 'smoke' in {'mini': 15}"):
        smoke.per_profile({"mini": 15})
    # smoke never writes into results/ or runs/; mini writes under $DPM_LAB_HOME (no dirs given)
    assert sorted(smoke.dirs) == ["results_dir", "runs_dir"] and mini.dirs == {}
    assert all(Path(d).is_dir() and not any(Path(d).iterdir()) for d in smoke.dirs.values())


def test_every_numbered_notebook_is_listed_in_the_readme():
    readme = (NOTEBOOKS[0].parent / "README.md").read_text()
    assert [p.name for p in NOTEBOOKS if p.name not in readme] == []

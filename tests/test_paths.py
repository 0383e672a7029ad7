"""Outputs go under $DPM_LAB_HOME (default: the working directory), never into the package,
and never into the committed reference folders."""
from pathlib import Path

import dpm_lab
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.results import checkpoint_path
from dpm_lab.experiments.runner import train_dense
from dpm_lab.training import paths


def test_outputs_follow_dpm_lab_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    assert paths.results_dir() == tmp_path / "home" / "results"
    assert paths.runs_dir() == tmp_path / "home" / "runs"
    assert paths.figures_dir() == tmp_path / "home" / "figures"
    monkeypatch.delenv("DPM_LAB_HOME")
    monkeypatch.chdir(tmp_path)
    assert paths.results_dir() == tmp_path / "results"


def test_a_run_writes_only_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    package = Path(dpm_lab.__file__).parent
    before = sorted(package.rglob("*"))
    profile = get_profile("smoke").with_(dataset="synthetic")
    _, record = train_dense(profile, 0, device="cpu", progress=False)
    assert checkpoint_path(record).is_relative_to(tmp_path / "home" / "runs")
    assert list((tmp_path / "home" / "results").rglob("*.json"))
    assert sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts) == \
        [p for p in before if "__pycache__" not in p.parts]


def test_reference_folder_is_found_from_a_subfolder(monkeypatch):
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo / "notebooks")
    assert paths.reference_dir("results") == repo / "results" / "reference"
    assert paths.reference_dir("figures") == repo / "figures" / "reference"


def test_reference_folder_is_found_from_outside_the_checkout(tmp_path, monkeypatch):
    """The docs' examples and a user's script run from anywhere: an editable install finds the
    checkout it was loaded from."""
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DPM_LAB_REFERENCE", raising=False)
    assert paths.reference_dir("results") == repo / "results" / "reference"


def test_a_record_read_from_a_file_finds_its_checkpoint_below_the_folders_above_it(tmp_path,
                                                                                   monkeypatch):
    """A home's records read from another working directory (a notebook's folder; no
    $DPM_LAB_HOME): the relative name is not below the reader's home, but below the folder above
    the record file that holds it."""
    monkeypatch.delenv("DPM_LAB_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    name = "runs/smoke/dense/abc/final.pt"
    checkpoint = tmp_path / "project" / name
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    record_file = tmp_path / "project" / "results" / "smoke" / "dense" / "abc.json"
    assert checkpoint_path({"checkpoint": name, "path": str(record_file)}) == checkpoint
    assert checkpoint_path({"checkpoint": name}) == tmp_path / name          # the reader's home
    elsewhere = tmp_path / "other" / "results" / "abc.json"                  # found nowhere
    assert checkpoint_path({"checkpoint": name, "path": str(elsewhere)}) == tmp_path / name
    (tmp_path / name).parent.mkdir(parents=True)
    (tmp_path / name).write_bytes(b"")                                       # home's comes first
    assert checkpoint_path({"checkpoint": name, "path": str(record_file)}) == tmp_path / name

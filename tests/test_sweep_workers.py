"""Sweeps that scale: several worker processes split a grid through file-system claims, and a
sweep killed with SIGKILL (twice) and restarted ends with exactly one record per grid point,
no temporary file and no claim left behind; a worker whose next point needs a dense model that
another process is training runs other points meanwhile."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dpm_lab.training.claims import release, remove_stale_temporaries, try_claim, writing

fork = multiprocessing.get_context("fork")  # a claim holder touches files only: no torch
GRID = ["--profile", "smoke", "--data", "synthetic", "--method", "single-step", "sp", "dpm",
        "--seed", "0", "1"]


def _sweep(tmp_path, *extra):
    env = {**os.environ, "MPLBACKEND": "Agg", "DPM_LAB_HOME": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "dpm_lab", "sweep", *GRID, "--device", "cpu",
                             *extra], env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(tmp_path) -> list[Path]:
    return sorted((tmp_path / "results" / "smoke" / "core").glob("*.json"))


def test_claims_are_exclusive_and_a_dead_holders_claim_is_taken_over(tmp_path):
    target = tmp_path / "run.json"
    assert try_claim(target) and not try_claim(target)       # ours; a second claim fails
    release(target)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim = tmp_path / "run.json.claim"
    claim.write_text(f"{os.uname().nodename} {dead.pid}")     # left by a killed process
    assert try_claim(target)
    (tmp_path / f"run.json.{dead.pid}.tmp").write_text("{half")  # left by a killed writer
    with writing(tmp_path / "other.json") as live:                 # being written right now
        live.write_text("{live")
        assert remove_stale_temporaries(tmp_path) == 1
        assert [p.name for p in tmp_path.glob("*.tmp")] == [live.name]


def _kill_when(tmp_path, ready) -> None:
    """Start the sweep with 2 workers and SIGKILL it (workers included) once ``ready()``."""
    proc = _sweep(tmp_path, "--workers", "2")
    deadline = time.time() + 600
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_sweep_killed_twice_finishes_with_one_record_per_point(tmp_path):
    # first kill: inside the first dense training (its checkpoint exists, no record yet)
    _kill_when(tmp_path, lambda: any(tmp_path.glob("runs/smoke/dense/*/train.ckpt")))
    assert _records(tmp_path) == [] and list(tmp_path.glob("**/*.claim"))
    # second kill: in the middle of the grid
    _kill_when(tmp_path, lambda: len(_records(tmp_path)) >= 1)
    before = len(_records(tmp_path))
    assert 1 <= before < 6
    done = _sweep(tmp_path, "--workers", "2")
    out, _ = done.communicate(timeout=900)
    assert done.returncode == 0, out
    # its output is a pipe (no bar): it says what it read back and each run it finished
    assert f"{before} of 6 runs already recorded" in out, out
    finished = [line for line in out.splitlines() if "final top-1" in line]
    assert len(finished) == 6 - before and finished[-1].startswith("[6/6] "), out
    records = _records(tmp_path)
    assert len(records) == 6                                  # 3 methods x 2 seeds
    assert {(json.loads(r.read_text())["method"], json.loads(r.read_text())["seed"])
            for r in records} == {(m, s) for m in ("single-step", "sp", "dpm") for s in (0, 1)}
    left = [p for p in tmp_path.glob("**/*") if p.suffix in (".tmp", ".claim")]
    assert left == []
    assert len(list((tmp_path / "results" / "smoke" / "dense").glob("*.json"))) == 2


def test_a_grid_submitted_through_submitits_local_executor_runs_once(tmp_path):
    import submitit

    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import submit
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    specs = [RunSpec(profile=profile, method=m) for m in ("single-step", "sp")]
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs", device="cpu")
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=20)
    jobs = submit(specs, executor, **dirs)
    records = [job.result() for job in jobs]
    assert sorted(r["method"] for r in records) == ["single-step", "sp"]
    assert records[0]["dense_run_id"] == records[1]["dense_run_id"]   # one dense model, shared
    assert submit(specs, executor, **dirs) == []                       # all recorded: nothing to do
    assert list(tmp_path.glob("**/*.claim")) == []


def _hold_claim(path, holding):
    assert try_claim(path)
    holding.set()
    time.sleep(600)


def test_a_worker_runs_other_points_while_another_process_trains_the_dense_model_it_needs(
        tmp_path):
    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import _work, dense_paths, run_paths
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    specs = [RunSpec(profile=profile, method="single-step", seed=s) for s in (0, 1)]
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs", device="cpu")
    dense0 = dense_paths(profile, 0, dirs["results_dir"], dirs["runs_dir"])[0]
    holding = fork.Event()
    holder = fork.Process(target=_hold_claim, args=(dense0, holding))  # "training" dense s0
    seed1 = run_paths(specs[1], dirs["results_dir"], dirs["runs_dir"])[0]
    seen = {}

    def free_the_phase_once_seed_1_is_recorded():
        deadline = time.time() + 120
        while not seed1.exists() and time.time() < deadline:
            time.sleep(0.1)
        seen["seed 1 recorded while dense s0 was held"] = seed1.exists()
        holder.kill()

    holder.start()
    try:
        assert holding.wait(timeout=30)
        watcher = threading.Thread(target=free_the_phase_once_seed_1_is_recorded)
        watcher.start()
        _work(specs, False, dirs, bar=False)
        watcher.join()
    finally:
        holder.kill()
        holder.join()
    assert seen == {"seed 1 recorded while dense s0 was held": True}
    seed0 = run_paths(specs[0], dirs["results_dir"], dirs["runs_dir"])[0]
    assert dense0.exists() and seed0.exists()       # then it trained dense s0 and ran seed 0
    assert list(tmp_path.glob("**/*.claim")) == []

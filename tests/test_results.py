import json

from dpm_lab.experiments.results import load_records, make_record, write_record


def _record(seed, accs):
    history = [{"epoch": i + 1, "test_acc": a} for i, a in enumerate(accs)]
    return make_record("dense", config={"lr": 0.1}, profile="smoke", seed=seed, dataset="synthetic",
                       model="resnet20", history=history, macs=10, params=5, wall_time_s=1.0)


def test_record_fields_final_vs_best_and_provenance(tmp_path):
    rec = _record(0, [50.0, 70.0, 65.0])
    assert rec["final_top1"] == 65.0 and rec["best_top1"] == 70.0
    for key in ("config", "profile", "seed", "dataset", "model", "macs", "params", "history",
                "wall_time_s", "git", "versions"):
        assert key in rec
    assert rec["versions"]["torch"] and rec["versions"]["torch-pruning"] == "1.6.1"


def test_write_is_atomic_and_load_returns_dataframe(tmp_path):
    path = write_record(_record(0, [1.0]), tmp_path / "a" / "r0.json")
    write_record(_record(1, [2.0]), tmp_path / "a" / "r1.json")
    assert json.loads(path.read_text())["seed"] == 0
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind
    df = load_records(tmp_path)
    assert sorted(df["seed"]) == [0, 1] and list(df.sort_values("seed")["final_top1"]) == [1.0, 2.0]
    assert load_records(tmp_path / "empty").empty


def test_a_prune_records_its_own_time_not_the_dense_training_it_started(tmp_path):
    """A prune run whose dense model is missing trains it first, in the same call; the dense
    model's time is in its own record, so the two records' times are disjoint and add up to no
    more than the whole call."""
    import time

    from dpm_lab.experiments.profiles import get_profile
    from dpm_lab.experiments.runner import run
    from dpm_lab.experiments.runspec import RunSpec

    profile = get_profile("smoke").with_(dataset="synthetic")
    dirs = dict(results_dir=tmp_path / "res", runs_dir=tmp_path / "runs")
    t0 = time.time()
    record = run(RunSpec(method="dpm", profile=profile), device="cpu", progress=False, **dirs)
    elapsed = time.time() - t0
    dense = load_records(tmp_path / "res" / "smoke" / "dense").iloc[0]
    assert 0 < record["wall_time_s"] and 0 < dense["wall_time_s"]
    assert record["wall_time_s"] + dense["wall_time_s"] <= elapsed

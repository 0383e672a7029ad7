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

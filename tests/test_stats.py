"""Paired differences over seeds: pairing, the t-interval, and no pooling across configurations."""
import math

import pandas as pd
import pytest

from dpm_lab.stats import interval, paired_differences


def test_interval_matches_the_t_table():
    mean, lo, hi = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764; sd = 1.5811; half width = 2.7764 * 1.5811 / sqrt(5)
    assert mean == 3.0 and hi - mean == pytest.approx(2.7764 * 1.5811 / math.sqrt(5), rel=1e-4)
    assert math.isnan(interval([1.0])[1])


def _record(method, seed, top1, target=0.5, window=None):
    options = {"target": {"macs": target}, "criterion": "l2"}
    if window:
        options["self_rectifying"] = {"window": window}
    config = {"host": "core", "method": method, "model": "resnet20",
              "data": {"dataset": "slice", "val_fraction": 0.0},
              "train": {"epochs": 15, "lr": 0.05, "schedule": "onecycle"},
              "options": options}
    cid = f"{method}-{target}-{window}"
    return {"method": method, "seed": seed, "final_top1": top1, "config": config,
            "config_id": cid, "dense_run_id": f"d{seed}"}


def test_pairs_by_seed_within_a_target_and_never_across_configurations():
    rows = [_record("single-step", s, 70 + s) for s in range(3)]
    rows += [_record("dpm", s, 71 + s + 0.1 * s, window=10) for s in range(3)]
    rows += [_record("dpm", s, 60.0, window=5) for s in range(2)]
    rows += [_record("single-step", s, 50.0, target=0.25) for s in range(3)]
    pairs = paired_differences(pd.DataFrame(rows), "dpm", "single-step")
    assert len(pairs) == 2                        # one per dpm configuration, target 0.5 only
    w10 = pairs[pairs["config_id_a"] == "dpm-0.5-10"].iloc[0]
    assert w10["seeds"] == 3 and w10["diff"] == pytest.approx(1.1)
    assert w10["claim"]                           # the interval [1.0, 1.2] +- t excludes 0
    w5 = pairs[pairs["config_id_a"] == "dpm-0.5-5"].iloc[0]
    assert w5["seeds"] == 2 and w5["diff"] == pytest.approx(-10.5)


def test_self_rectifying_table_pairs_each_dpm_setting_with_sp_under_its_criterion():
    from dpm_lab.figures import self_rectifying_table

    def rec(method, seed, val, criterion, window=None, released=None, pct=None):
        r = _record(method, seed, 0.0, window=window)
        r["config"]["options"]["criterion"] = criterion
        r["config_id"] += criterion
        return {**r, "final_val": val, "released": released, "importance_percentiles": pct,
                "releases": [{}] * (released or 0),
                "git": "abc1234"}

    rows = [rec("sp", s, 70.0 + s, c) for s in range(2) for c in ("l2", "random")]
    rows += [rec("dpm", s, 71.0 + s, "l2", 10, 20, {"released": 40.0, "pruned": 30.0})
             for s in range(2)]
    rows += [rec("dpm", s, 66.0 + 2 * s, "random", 10, 30, {"released": 70.0, "pruned": 50.0})
             for s in range(2)]
    table = self_rectifying_table(pd.DataFrame(rows)).set_index("criterion")
    assert table.loc["l2", "diff"] == pytest.approx(1.0)       # paired with SP under L2 only
    assert table.loc["random", "diff"] == pytest.approx(-3.5)  # (-4 + -3) / 2
    assert table.loc["random", "released_pct"] == 70.0 and table.loc["random", "seeds"] == 2
    assert table.loc["l2", "window"] == 10 and table.loc["l2", "released"] == 20


def test_sr_signal_table_reads_the_recorded_quantiles_of_dpm_runs_only():
    from dpm_lab.figures import sr_signal_table

    dpm = _record("dpm", 0, 70.0, window=10)
    dpm["sr_signals"] = {"quantiles": [0.1, 0.5, 0.9],
                         "decaying": {"n": 5, "c_rate": [-0.5, 0.3, 0.9], "c_len": [1, 1, 1]},
                         "never_selected": {"n": 0, "c_rate": None, "c_len": None}}
    sp = {**_record("sp", 0, 70.0), "sr_signals": {}}
    table = sr_signal_table(pd.DataFrame([dpm, sp]))
    assert len(table) == 1 and table["window"].iloc[0] == 10
    quantiles = table[["decaying q10", "decaying q50", "decaying q90"]].iloc[0].tolist()
    assert quantiles == [-0.5, 0.3, 0.9]
    assert table["never_selected q50"].isna().all()    # every structure was selected at some point

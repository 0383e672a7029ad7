"""Paired differences over seeds: pairing, the t-interval, no pooling across configurations, and
Holm's adjustment within a table."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from dpm_lab.reporting.stats import adjust, compare, holm, interval, paired_differences, t_test

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def test_interval_matches_the_t_table():
    mean, lo, hi = interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764; sd = 1.5811; half width = 2.7764 * 1.5811 / sqrt(5)
    assert mean == 3.0 and hi - mean == pytest.approx(2.7764 * 1.5811 / math.sqrt(5), rel=1e-4)
    assert math.isnan(interval([1.0])[1])


def _record(method, seed, top1, target=0.5, window=None, N=None):
    options = {"target": {"macs": target}, "criterion": "l2"}
    if N:
        options["decay_steps"] = N
    if window:
        options["self_rectifying"] = {"window": window}
    config = {"host": "core", "method": method, "model": "resnet20",
              "data": {"dataset": "slice", "val_fraction": 0.0},
              "train": {"epochs": 15, "lr": 0.05, "schedule": "onecycle"},
              "options": options}
    cid = f"{method}-{target}-{window}" + (f"-N{N}" if N else "")
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
    # the interval [1.0, 1.2] +- t excludes 0, and so does Holm's over the table's two rows
    assert w10["m"] == 2 and w10["p_holm"] < 0.05 and w10["claim"]
    w5 = pairs[pairs["config_id_a"] == "dpm-0.5-5"].iloc[0]
    assert w5["seeds"] == 2 and w5["diff"] == pytest.approx(-10.5)


def test_methods_that_share_n_pair_only_at_equal_n_and_single_step_pairs_with_every_n():
    """SP and DPM both have Smooth Pruning's N: DPM at N = 4 pairs with SP at N = 4 only (as
    configs/full/sr_search.toml runs them, one SP per N); single-step has no N and pairs with
    both."""
    rows = [_record(m, s, base + s + (N == 8), N=N) for s in range(2)
            for m, base in (("dpm", 71.0), ("sp", 70.0)) for N in (4, 8)]
    rows += [_record("single-step", s, 65.0) for s in range(2)]
    records = pd.DataFrame(rows)
    pairs = paired_differences(records, "dpm", "sp")
    assert sorted(zip(pairs["config_id_a"], pairs["config_id_b"])) == [
        ("dpm-0.5-None-N4", "sp-0.5-None-N4"), ("dpm-0.5-None-N8", "sp-0.5-None-N8")]
    assert (pairs["diff"] == 1.0).all()
    assert len(paired_differences(records, "dpm", "single-step")) == 2


def test_self_rectifying_table_pairs_each_dpm_setting_with_sp_under_its_criterion():
    from dpm_lab.reporting.figures import self_rectifying_table

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
    from dpm_lab.reporting.figures import sr_signal_table

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


def test_holm_matches_a_hand_computation_with_ties_and_the_step_down_stop():
    p = [0.030, 0.010, 0.004, 0.010, 0.040]
    # ranks: 0.004 (k=1, x5), 0.010 (k=2, x4), 0.010 (k=3, x3: a tie), 0.030 (k=4, x2), 0.040
    # (k=5, x1); adjusted, the running max of min(1, (m-k+1) p): 0.020, 0.040, 0.040, 0.060, 0.060
    adjusted, level = holm(p)
    assert adjusted.tolist() == pytest.approx([0.060, 0.040, 0.020, 0.040, 0.060], abs=1e-15)
    # levels: rejected ranks at 0.05 / (m - k + 1), the tie at its first rank's 0.05 / 4; from
    # the stop (k = 4) on, everything at 0.05 / 2, although 0.040 alone would pass 0.05 / 1
    assert level.tolist() == pytest.approx([0.025, 0.0125, 0.01, 0.0125, 0.025], abs=1e-15)
    # the row order never matters
    perm = [4, 2, 0, 3, 1]
    a2, l2 = holm(np.asarray(p)[perm])
    assert a2.tolist() == pytest.approx(adjusted[perm].tolist(), abs=1e-15)
    assert l2.tolist() == pytest.approx(level[perm].tolist(), abs=1e-15)
    # capped at 1; NaN (no test) outside the family, m counts only finite p
    a3, l3 = holm([0.5, math.nan, 0.6])
    assert a3[0] == a3[2] == 1.0 and math.isnan(a3[1]) and math.isnan(l3[1])
    with pytest.raises(ValueError, match="alpha=1.5"):
        holm([0.1], alpha=1.5)


def _table(ps, seeds=5, sd=1.0):
    """A paired-difference table whose rows have exactly the p-values ``ps``: the mean is set
    from the t quantile."""
    se = sd / math.sqrt(seeds)
    diff = [st.t.isf(p / 2, seeds - 1) * se for p in ps]
    return pd.DataFrame({"seeds": seeds, "diff": diff, "diff_std": sd, "p": ps,
                         "claim": True})  # a stale claim: adjust must replace it


def test_adjust_states_the_family_size_and_claims_only_below_alpha_after_holm():
    t = adjust(_table([0.030, 0.010, 0.004, 0.010, 0.040]))
    assert (t["m"] == 5).all()
    assert t["claim"].tolist() == [False, True, True, True, False]   # 0.030 < 0.05 unadjusted
    assert (t["claim"] == (t["p_holm"] < 0.05)).all()
    # the adjusted interval excludes zero exactly where the row is claimed, the unadjusted one
    # (0.95) wherever p < 0.05, and it is the t-interval at the level Holm judged the row at
    excludes = (t["holm_low"] > 0) | (t["holm_high"] < 0)
    assert excludes.tolist() == t["claim"].tolist()
    half = st.t.ppf(1 - 0.0125 / 2, 4) * 1.0 / math.sqrt(5)
    assert t["holm_high"].iloc[1] - t["diff"].iloc[1] == pytest.approx(half, rel=1e-12)
    assert t["holm_conf"].iloc[0] == pytest.approx(1 - 0.025, abs=1e-15)
    # a comparison shown in two rows counts once
    dup = _table([0.01, 0.01, 0.02]).assign(config_id_a=["x", "x", "y"], config_id_b="b")
    d = adjust(dup)
    assert (d["m"] == 2).all() and d["p_holm"].tolist() == pytest.approx([0.02, 0.02, 0.02])


def test_t_test_is_the_paired_t_test_and_equal_differences_have_no_spread():
    v = [0.3, 1.2, -0.4, 2.0, 0.9]
    assert t_test(v) == pytest.approx(st.ttest_1samp(v, 0.0).pvalue, rel=1e-12)
    assert t_test([0.0, 0.0, 0.0]) == 1.0 and t_test([0.5, 0.5]) == 0.0
    assert math.isnan(t_test([1.0]))


def test_compare_adjusts_several_method_pairs_as_one_table():
    rows = [_record("single-step", s, 70.0 + 0.1 * s) for s in range(3)]
    rows += [_record("sp", s, 71.0 + 0.2 * s) for s in range(3)]
    rows += [_record("dpm", s, 71.0 + 0.3 * s, window=10) for s in range(3)]
    records = pd.DataFrame(rows)
    alone = paired_differences(records, "dpm", "single-step")
    table = compare(records, (("dpm", "single-step"), ("dpm", "sp"), ("sp", "single-step")))
    assert alone["m"].tolist() == [1] and (table["m"] == 3).all()
    # differences: dpm - single-step 1.0, 1.2, 1.4; dpm - sp 0, 0.1, 0.2; sp - single-step 1.0,
    # 1.1, 1.2; their p-values from scipy's one-sample t-test, Holm's by hand
    by = table.set_index("comparison")
    p = {c: st.ttest_1samp(d, 0.0).pvalue for c, d in (("dpm - single-step", [1.0, 1.2, 1.4]),
                                                         ("dpm - sp", [0.0, 0.1, 0.2]),
                                                         ("sp - single-step", [1.0, 1.1, 1.2]))}
    assert by["p"].to_dict() == pytest.approx(p, rel=1e-9)
    assert alone["p"].iloc[0] == pytest.approx(p["dpm - single-step"], rel=1e-9)
    assert alone["p_holm"].iloc[0] == pytest.approx(p["dpm - single-step"], rel=1e-9)  # m = 1
    s_ss, d_ss, d_sp = p["sp - single-step"], p["dpm - single-step"], p["dpm - sp"]
    assert s_ss < d_ss < d_sp                      # the ranks the hand computation uses
    hand = {"sp - single-step": 3 * s_ss, "dpm - single-step": max(3 * s_ss, 2 * d_ss),
            "dpm - sp": max(3 * s_ss, 2 * d_ss, d_sp)}
    assert by["p_holm"].to_dict() == pytest.approx(hand, rel=1e-9)


@pytest.mark.skipif(not (REFERENCE / "mini" / "core").exists(), reason="no committed records")
def test_no_core_claim_survives_holm_on_the_committed_records(tmp_path, capsys):
    from dpm_lab.experiments.cli import main
    from dpm_lab.reporting.figures import report

    core, = [c for c in report("mini", REFERENCE, tmp_path) if c.name == "core"]
    pairs = core.pairs
    assert (pairs["m"] == 18).all() and len(pairs) == 18  # 6 pairs of 4 methods x 3 targets
    # the table's two smallest p (docs/results.md): unadjusted intervals below zero, Holm's not;
    # Holm's step-down multiplies the smallest by 18 and the next by 17
    ranked = pairs.sort_values("p")
    assert [(r.comparison, r.target) for r in ranked.head(2).itertuples()] == [
        ("dpm - sp", "MACs 0.5"), ("iterative - single-step", "MACs 0.25")]
    assert ranked["p"].head(2).tolist() == pytest.approx([0.0351, 0.0485], abs=5e-5)
    assert ranked["p_holm"].head(2).tolist() == pytest.approx(
        [18 * ranked["p"].iloc[0], 17 * ranked["p"].iloc[1]], rel=1e-9)
    for r in ranked.head(2).itertuples():
        assert r.ci95_high < 0 and r.holm_low < 0 < r.holm_high
    assert not pairs["claim"].any()
    # the printed report states every paired table's family and the adjusted columns
    assert main(["report", "--profile", "mini", "--results-dir", str(REFERENCE),
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "-- core: paired differences" in out and "family m = 18" in out
    assert "family m = 6" in out and "family m = 11" in out     # DepGraph, OTOv2
    assert "p_holm" in out and "holm_low" in out and "ci95_low" in out

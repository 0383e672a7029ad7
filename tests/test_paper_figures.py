"""``python -m dpm_lab figures`` brings every committed figure back from the reference records
and the paper CSV alone: the same files, and the same numbers drawn in each (its CSV; images are
not compared, they differ with fonts and matplotlib versions)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpm_lab.reporting.paper_figures import REFERENCE_PROFILES, draw_all, paper_points

ROOT = Path(__file__).resolve().parent.parent


def test_every_committed_figure_is_drawn_again_from_records(tmp_path):
    reference = ROOT / "figures" / "reference"
    committed = sorted(p.name for p in reference.iterdir() if p.suffix in (".png", ".pdf", ".csv"))
    written, notes = [], []
    for profile in REFERENCE_PROFILES:
        drawn, skipped = draw_all(ROOT / "results" / "reference", tmp_path, profile)
        written, notes = written + drawn, notes + skipped
    assert committed and sorted(p.name for p in written) == committed
    assert all(p.stat().st_size > 1000 for p in written if p.suffix != ".csv")
    assert all("skipped" in n for n in notes)
    for csv in (p for p in written if p.suffix == ".csv"):   # the data behind each figure
        assert csv.read_text() == (reference / csv.name).read_text(), csv.name


def test_the_command_writes_where_it_is_told(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-m", "dpm_lab", "figures", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "accuracy_vs_macs_core_mini.png").exists()


def test_paper_points_come_from_the_csv():
    pts = paper_points("OTOv2", "vgg16_bn").set_index("method")
    assert pts.loc["OTOv2 + DPM", "top1"] == 93.8 and pts.loc["OTOv2", "macs"] == 0.265


def test_widths_and_norm_trajectories_are_drawn_from_the_fields_records_keep(tmp_path):
    """Records written before these fields existed are skipped (no figure); records that keep
    them give one figure each."""
    from dpm_lab.reporting.paper_figures import norm_trajectories_figure, widths_figure
    from dpm_lab.experiments.results import load_records

    # the superseded core records predate both fields
    records = load_records(ROOT / "results" / "reference" / "superseded" / "mini" / "core")
    records = records[records["method"].isin(["sp", "dpm"])].head(4).copy()
    assert widths_figure(records, "core", "mini", tmp_path) is None
    assert norm_trajectories_figure(records, "core", "mini", tmp_path) is None
    records["dense_widths"] = [[16, 16, 32]] * len(records)
    records["widths"] = [[8, 16, 20]] * len(records)
    records["norm_sample"] = [{"decay_steps": 2, "structures": [3, 7], "role": ["chosen", "free"],
                               "l_init": [1.0, 2.0], "relative": [[1, 0.5, 0, 0, 0],
                                                                  [1, 1, 0.9, 0.9, 0.9]]}] * len(records)
    for draw, name in ((widths_figure, "widths_core_mini"),
                       (norm_trajectories_figure, "norm_trajectories_core_mini")):
        assert [p.name for p in draw(records, "core", "mini", tmp_path)] == [
            f"{name}.png", f"{name}.pdf", f"{name}.csv"]


def test_ablation_points_hold_every_other_knob_at_its_default():
    """On the recorded Self-Rectifying selection runs: each point of a knob's panel is one
    configuration; SP, which has no SR threshold, is the panel's reference level; two
    configurations that would pool into one point are an error."""
    import pandas as pd
    import pytest

    from dpm_lab.reporting.paper_figures import ablation_points
    from dpm_lab.experiments.results import load_records

    records = load_records(ROOT / "results" / "reference" / "self-rectifying" / "mini" / "core")
    points = ablation_points(records)
    assert {"t_rate", "t_len", "window", "rule", "criterion"} <= set(points["knob"])
    assert (points.groupby(["knob", "value", "method"], dropna=False).size() == 1).all()
    sp = points[(points["knob"] == "t_rate") & (points["method"] == "sp")]
    assert len(sp) == 1 and sp["value"].isna().all()
    default = points[(points["knob"] == "t_rate") & (points["value"] == 0.5)]
    assert list(default["method"]) == ["dpm"]
    twin = records[records["method"] == "sp"].iloc[[0]].assign(config_id="another")
    with pytest.raises(ValueError, match="configurations would pool into one point"):
        ablation_points(pd.concat([records, twin], ignore_index=True))


def test_a_legend_says_when_its_points_rest_on_different_numbers_of_seeds():
    """The Taylor pair has 5 seeds where the other criteria have 3: the legend says 3-5."""
    from dpm_lab.reporting.paper_figures import _seeds

    assert _seeds([3, 3, None]) == "3 seeds"
    assert _seeds([3, 5, 3]) == "3-5 seeds"
    assert _seeds(1) == "1 seed"


def test_every_method_has_one_colour_and_marker_of_its_own():
    from dpm_lab.reporting.figures import METHOD_STYLE, series_styles
    from dpm_lab.hosts import METHODS

    methods = {m for ms in METHODS.values() for m in ms}
    assert methods <= set(METHOD_STYLE)
    for key in ("color", "marker"):
        values = [tuple(s[key]) if key == "color" else s[key] for s in METHOD_STYLE.values()]
        assert len(set(values)) == len(values), key
    # a method's second configuration keeps its colour and marker, and changes fill and line
    first, second = series_styles(["dpm", "dpm"])
    assert (first["color"], first["marker"]) == (second["color"], second["marker"])
    assert (first.get("fillstyle", "full"), first["ls"]) != (second["fillstyle"], second["ls"])


def test_legends_say_knobs_in_words():
    from dpm_lab.reporting.figures import knob_label, series_label
    from dpm_lab.reporting.paper_figures import _our_points
    from dpm_lab.experiments.results import load_records

    assert knob_label("lasso_while_decaying", False) == "lasso off while decaying"
    assert knob_label("N", 84.0) == "N = 84"
    assert series_label("dpm", {"on_release": "replace"}, "otov2") == \
        "OTOv2 + DPM, released replaced"
    words = _our_points(load_records(ROOT / "results" / "reference" / "mini" / "otov2"))["words"]
    assert words.nunique() == len(words)          # every configuration told apart
    assert not words.str.contains("=|lasso_while|l_init_at|on_release").any()


def test_a_macs_axis_does_not_magnify_a_spread_of_a_few_thousandths():
    import matplotlib.pyplot as plt

    from dpm_lab.reporting.figures import MIN_MACS_SPAN, dodge, macs_axis

    fig, ax = plt.subplots()
    macs = [0.4968, 0.4972, 0.4987]
    macs_axis(ax, macs)
    low, high = ax.get_xlim()
    assert high - low >= MIN_MACS_SPAN and low < min(macs) and high > max(macs)
    plt.close(fig)
    pos, note = dodge(macs, 0.002)
    assert np.allclose(np.diff(pos), 0.002) and pos.mean() == pytest.approx(np.mean(macs))
    assert "side by side" in note
    assert dodge([0.1, 0.5], 0.002) == (pytest.approx([0.1, 0.5]), "")


def test_points_where_dpm_is_sp_run_for_run_are_found():
    """DPM that releases nothing is SP: at N = 1 and at T_rate 0.75 and 1 in the recorded
    ablations (the legend then says one point covers the other)."""
    from dpm_lab.reporting.figures import final_metric
    from dpm_lab.reporting.paper_figures import _ablation_panels, equal_runs
    from dpm_lab.experiments.results import load_records

    records = load_records(ROOT / "results" / "reference" / "ablations" / "mini" / "core")
    panels = {k: p for k, _, p in _ablation_panels(records)}
    metric = final_metric(records)
    assert equal_runs(panels["N"], "N", metric) == [1.0]
    assert equal_runs(panels["t_rate"], "t_rate", metric) == [0.75, 1.0]
    assert equal_runs(panels["criterion"], "criterion", metric) == []


def test_host_differences_put_the_papers_change_beside_ours():
    """Ours are report's rows (same Holm family); the paper's are its printed changes."""
    from dpm_lab.reporting.figures import method_pairs
    from dpm_lab.reporting.paper_figures import host_differences
    from dpm_lab.experiments.results import load_records

    records = load_records(ROOT / "results" / "reference" / "mini" / "otov2")
    t = host_differences(records, "otov2")
    paper = t[t["source"] == "paper"].set_index("comparison")["diff"]
    assert paper.to_dict() == {"sp - host": 0.2, "dpm - host": 0.4}
    ours = t[t["source"] == "ours"]
    pairs = method_pairs(records, "otov2")
    assert sorted(ours["diff"]) == sorted(pairs.loc[pairs["comparison"].str.endswith("- host"),
                                                    "diff"])
    assert (ours["holm_low"] <= ours["ci95_low"]).all()
    assert (ours["holm_high"] >= ours["ci95_high"]).all()
    assert ours["m"].eq(len(pairs)).all()
    # the paper's row comes first, then ours, per method
    assert list(t["source"]) == ["paper", "ours"] + ["paper"] + ["ours"] * 5


def test_report_tables_sort_targets_by_number_and_tell_otov2_variants_apart():
    from dpm_lab.reporting.figures import (by_target, distinguishing, self_rectifying_table,
                                           summarize)
    from dpm_lab.experiments.results import load_records

    core = summarize(load_records(ROOT / "results" / "reference" / "mini" / "core"))
    dpm = by_target(core)[lambda t: t["method"] == "dpm"]["target"]
    assert list(dpm) == ["MACs 0.1", "MACs 0.25", "MACs 0.5"]
    assert "on_release" in distinguishing(core) and "t_rate" not in distinguishing(core)
    otov2 = load_records(ROOT / "results" / "reference" / "mini" / "otov2")
    sr = self_rectifying_table(otov2)
    knobs = ["lasso_while_decaying", "l_init_at", "on_release"]
    assert set(knobs) <= set(sr) and not sr.duplicated(knobs).any()

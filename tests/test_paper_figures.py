"""``python -m dpm_lab figures`` brings every committed figure back from the reference records
and the paper CSV alone: the same files, and the same numbers drawn in each (its CSV; images are
not compared, they differ with fonts and matplotlib versions)."""
import os
import subprocess
import sys
from pathlib import Path

from dpm_lab.paper_figures import draw_all, paper_points

ROOT = Path(__file__).resolve().parent.parent


def test_every_committed_figure_is_drawn_again_from_records(tmp_path):
    reference = ROOT / "figures" / "reference"
    committed = sorted(p.name for p in reference.iterdir() if p.suffix in (".png", ".pdf", ".csv"))
    written, notes = draw_all(ROOT / "results" / "reference", tmp_path)
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
    from dpm_lab.paper_figures import norm_trajectories_figure, widths_figure
    from dpm_lab.results import load_records

    records = load_records(ROOT / "results" / "reference" / "mini" / "core")
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

    from dpm_lab.paper_figures import ablation_points
    from dpm_lab.results import load_records

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
    from dpm_lab.paper_figures import _seeds

    assert _seeds([3, 3, None]) == "3 seeds"
    assert _seeds([3, 5, 3]) == "3-5 seeds"
    assert _seeds(1) == "1 seed"

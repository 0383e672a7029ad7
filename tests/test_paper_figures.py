"""``python -m dpm_lab figures`` brings every committed figure back from the reference records
and the paper CSV alone."""
import os
import subprocess
import sys
from pathlib import Path

from dpm_lab.paper_figures import draw_all, paper_points

ROOT = Path(__file__).resolve().parent.parent


def test_every_committed_figure_is_drawn_again_from_records(tmp_path):
    committed = sorted(p.name for p in (ROOT / "figures" / "reference").iterdir()
                       if p.suffix in (".png", ".pdf"))
    written, notes = draw_all(ROOT / "results" / "reference", tmp_path)
    assert committed and sorted(p.name for p in written) == committed
    assert all(p.stat().st_size > 1000 for p in written)
    assert all("skipped" in n for n in notes)


def test_the_command_writes_where_it_is_told(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-m", "dpm_lab", "figures", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "accuracy_vs_macs_core_mini.png").exists()


def test_paper_points_come_from_the_csv():
    pts = paper_points("OTOv2", "vgg16_bn").set_index("method")
    assert pts.loc["OTOv2 + DPM", "top1"] == 93.8 and pts.loc["OTOv2", "macs"] == 0.265

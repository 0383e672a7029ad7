"""The main job (``make train``, ``python -m dpm_lab main-job``): the profile's dense ResNet-20,
trained or reused, pruned with DPM to half of its MACs.

It is one ordinary run, the same as ``python -m dpm_lab run --method dpm --target-macs 0.5
--seed 0``: the same record, checkpoint and reuse, so ``report`` and the notebooks read it like
any other run. What it adds is what a first run needs: the CIFAR-10 slice fetched when it is
missing, a short table of what pruning kept, and a figure of the fine-tuning.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..training.data import download_cifar10_slice
from ..training.paths import figures_dir
from . import runner
from .runspec import RunSpec, resolve

METHOD, TARGET_MACS = "dpm", 0.5


def main_job_spec(profile=None, seed: int = 0) -> RunSpec:
    """The main job's run: DPM to ``TARGET_MACS`` of the dense MACs, every other option the
    profile's."""
    return RunSpec(method=METHOD, profile=profile, target_macs=TARGET_MACS, seed=seed)


def main_job(profile=None, seed: int = 0, *, results_dir=None, runs_dir=None, device=None,
             data_root=None, progress=None, figure: bool = True) -> tuple[dict, Path | None]:
    """Run the main job (or read it back when it finished before); return its record and the
    path of its figure (``None`` with ``figure=False``).

    When the profile trains on the CIFAR-10 slice and none is found, the slice is built first
    (:func:`dpm_lab.training.data.download_cifar10_slice`), so that a fresh clone runs; without
    network that stops with an error saying what is missing, where it was looked for and how to get
    it.
    The figure (``$DPM_LAB_HOME/figures``) is the test top-1 through fine-tuning, the epochs
    during which channels decay shaded, the dense model's top-1 as a line.
    """
    spec = main_job_spec(profile, seed)
    if resolve(spec).profile.dataset == "cifar10-slice":
        download_cifar10_slice(data_root)
    record = runner.run(spec, results_dir=results_dir, runs_dir=runs_dir, device=device,
                             data_root=data_root, progress=progress)
    if not figure:
        return record, None
    from ..reporting.figures import accuracy_through_pruning

    name = (f"main_job_{record['model']}_{record['dataset']}_{record['profile']}"
            f"_s{record['seed']}_{record['run_id']}.png")
    return record, accuracy_through_pruning([record], out=figures_dir() / name, show=False)


def summary(record: dict) -> pd.DataFrame:
    """The main job's table: test top-1, MACs and parameters of the dense and the pruned model,
    the share of each that pruning kept, and how many decaying channels Self-Rectifying
    released (restored) during fine-tuning."""
    rows = [("dense", record["dense_top1"], record["dense_macs"], record["dense_params"], None),
            (f"{record['method']} to {TARGET_MACS:g}x MACs", record["final_top1"], record["macs"],
             record["params"], record.get("released"))]
    return pd.DataFrame({
        "model": [r[0] for r in rows],
        "top-1 (%)": [r[1] for r in rows],
        "MACs (M)": [r[2] / 1e6 for r in rows],
        "MACs kept (%)": [100 * r[2] / record["dense_macs"] for r in rows],
        "params (M)": [r[3] / 1e6 for r in rows],
        "params kept (%)": [100 * r[3] / record["dense_params"] for r in rows],
        "releases": pd.array([r[4] for r in rows], dtype="Int64"),
    })


def format_summary(record: dict) -> str:
    """:func:`summary` as the text the command line prints."""
    table = summary(record).round({"top-1 (%)": 2, "MACs (M)": 2, "MACs kept (%)": 1,
                                   "params (M)": 3, "params kept (%)": 1})
    table["releases"] = table["releases"].astype("string").fillna("-")
    return table.to_string(index=False)

"""Figures, each drawn only from recorded results (records from ``dpm_lab.results``).

Every function returns the path of the PNG it wrote under ``figures/`` (or ``out``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .data import REPO_ROOT

FIGURES_DIR = REPO_ROOT / "figures"


def _save(fig, name: str, out=None) -> Path:
    path = Path(out) if out else FIGURES_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def training_curve(record: dict, out=None, show: bool = False) -> Path:
    """Train loss and test top-1 per epoch of one run."""
    h = pd.DataFrame(record["history"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(h["epoch"], h["train_loss"], marker="o")
    a.set(xlabel="epoch", ylabel="train loss")
    b.plot(h["epoch"], h["test_acc"], marker="o", color="C1")
    b.set(xlabel="epoch", ylabel="test top-1 (%)")
    title = (f"{record['kind']} {record['model']} / {record['dataset']} ({record['profile']}, seed "
             f"{record['seed']}, rev {record['git']}): final {record['final_top1']:.2f}%")
    fig.suptitle(title, fontsize=9)
    name = f"{record['kind']}_{record['model']}_{record['dataset']}_{record['profile']}_s{record['seed']}.png"
    path = _save(fig, name, out)
    if not show:
        plt.close(fig)
    return path


def records_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records)


def summarize(records: pd.DataFrame, by=("method", "target_macs")) -> pd.DataFrame:
    """Mean ± std over seeds of final top-1 (best beside it) and the MACs/params ratios."""
    g = records.groupby(list(by))
    out = g.agg(seeds=("seed", "nunique"), final_mean=("final_top1", "mean"),
                final_std=("final_top1", "std"), best_mean=("best_top1", "mean"),
                macs_ratio=("macs_ratio", "mean"), params_ratio=("params_ratio", "mean"))
    return out.reset_index()


def accuracy_vs_macs(records: pd.DataFrame, out=None, title: str = "", show: bool = False) -> Path:
    """Final top-1 (mean ± std over seeds) against the kept fraction of MACs, one line per method,
    with the dense accuracy as a reference band."""
    s = summarize(records)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (method, d) in enumerate(s.groupby("method")):
        d = d.sort_values("macs_ratio")
        ax.errorbar(d["macs_ratio"], d["final_mean"], yerr=d["final_std"].fillna(0), marker="o",
                    capsize=3, label=method, color=sns.color_palette()[i])
    dense = records.drop_duplicates("seed")["dense_top1"]
    ax.axhspan(dense.mean() - dense.std(), dense.mean() + dense.std(), color="grey", alpha=0.2,
               label=f"dense {dense.mean():.1f}%")
    ax.set(xlabel="MACs kept (fraction of dense)", ylabel="final top-1 (%)", xscale="log",
           title=title)
    ax.legend(fontsize=8)
    path = _save(fig, "accuracy_vs_macs.png" if out is None else Path(out).name,
                 out)
    if not show:
        plt.close(fig)
    return path

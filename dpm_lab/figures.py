"""Figures, each drawn only from recorded results (records from ``dpm_lab.results``).

Every function returns the path of the PNG it wrote under ``figures/`` (or ``out``). The notebook
helpers at the end also draw from live pruning objects (norm traces, Self-Rectifying signals) and
save only when given ``out``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

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
    """Mean ± std over seeds of final top-1 (best beside it) and of the MACs/params ratios."""
    g = records.groupby(list(by))
    out = g.agg(seeds=("seed", "nunique"), final_mean=("final_top1", "mean"),
                final_std=("final_top1", "std"), best_mean=("best_top1", "mean"),
                macs_ratio=("macs_ratio", "mean"), macs_std=("macs_ratio", "std"),
                params_ratio=("params_ratio", "mean"), params_std=("params_ratio", "std"))
    return out.reset_index()


def accuracy_vs_macs(records: pd.DataFrame, out=None, title: str = "", show: bool = False,
                     by=("method", "target_macs")) -> Path:
    """Final top-1 (mean ± std over seeds) against the kept fraction of MACs (± std), one line per
    method, with the dense accuracy as a reference band. ``by``: the columns that make one point."""
    s = summarize(records, by)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (method, d) in enumerate(s.groupby("method")):
        d = d.sort_values("macs_ratio")
        ax.errorbar(d["macs_ratio"], d["final_mean"], yerr=d["final_std"].fillna(0),
                    xerr=d["macs_std"].fillna(0), marker="o", capsize=3, label=method,
                    color=sns.color_palette()[i])
    dense = records.drop_duplicates("seed")["dense_top1"].dropna()
    if len(dense):
        ax.axhspan(dense.mean() - dense.std(), dense.mean() + dense.std(), color="grey",
                   alpha=0.2, label=f"dense {dense.mean():.1f}%")
    ax.set(xlabel="MACs kept (fraction of dense)", ylabel="final top-1 (%)", xscale="log",
           title=title)
    ax.legend(fontsize=8)
    path = _save(fig, "accuracy_vs_macs.png" if out is None else Path(out).name,
                 out)
    if not show:
        plt.close(fig)
    return path


def report(profile: str = "mini", results_dir=None, out_dir=None) -> list[tuple[str, pd.DataFrame, Path]]:
    """Every comparison recorded for ``profile``: the core methods (``results/<profile>/prune``)
    and each host (``results/<profile>/<host>``). Returns ``(name, summary table, figure path)``
    per comparison; the accuracy-vs-MACs figures go to ``out_dir`` (default ``figures/``)."""
    from .results import RESULTS_DIR, load_records

    base = Path(results_dir or RESULTS_DIR) / profile
    out_dir = Path(out_dir) if out_dir else FIGURES_DIR
    found = []
    for name, by in (("prune", ("method", "target_macs")), ("depgraph", ("method", "target")),
                     ("otov2", ("method", "target"))):
        records = load_records(base / name)
        if records.empty:
            continue
        title = {"prune": "core methods", "depgraph": "DepGraph host",
                 "otov2": "OTOv2 host"}[name] + f", {profile} profile"
        path = accuracy_vs_macs(records, out=out_dir / f"accuracy_vs_macs_{name}_{profile}.png",
                                title=title, by=by)
        found.append((name, summarize(records, by), path))
    return found


# ---- notebook helpers ------------------------------------------------------------------------
# Drawn from live objects (ChannelGroups, SmoothPruning, SelfRectifying) or records. They save a
# PNG only when ``out`` is given (and return its path, else None); ``show=True`` leaves the figure
# open so that a notebook shows it inline.

def _finish(fig, out, show: bool):
    path = None
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    if not show:
        plt.close(fig)
    return path


def groups_table(groups) -> pd.DataFrame:
    """One row per dependency group of a ``ChannelGroups``: root layer, channels (structures),
    first global structure id, and the coupled layers whose slices a structure spans."""
    return pd.DataFrame([{"root": g.root, "channels": g.size, "first_id": g.offset,
                          "coupled_layers": len(g.members), "members": ", ".join(g.members)}
                         for g in groups.groups])


def importance_table(groups, criteria=("l2", "l1", "bn", "random")) -> pd.DataFrame:
    """Every structure's score under each importance criterion (higher = more important), with its
    group's root layer and channel index. Gradient criteria (``taylor``) need ``.grad`` first."""
    from .pruning import make_importance

    group_of = groups.group_of.cpu().numpy()
    offsets = np.array([g.offset for g in groups.groups])
    df = pd.DataFrame({"group": [groups.groups[i].root for i in group_of],
                       "channel": np.arange(groups.num_structures) - offsets[group_of]})
    for c in criteria:
        df[c] = groups.importance(make_importance(c)).numpy()
    return df


def selection_by_group(groups, selections: dict, out=None, show: bool = True):
    """Fraction of each group's channels chosen, one bar colour per selection
    (``{label: structure ids}``): global MACs ranking against a uniform channel ratio, say."""
    n = len(groups.groups)
    sizes = np.array([g.size for g in groups.groups])
    width = 0.8 / max(len(selections), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * n), 3.4))
    for i, (label, ids) in enumerate(selections.items()):
        counts = np.bincount(groups.group_of.cpu().numpy()[np.asarray(ids, dtype=np.int64)],
                             minlength=n)
        ax.bar(np.arange(n) + (i - (len(selections) - 1) / 2) * width, counts / sizes, width,
               label=label)
    ax.set_xticks(np.arange(n), [f"{g.root}\n({g.size})" for g in groups.groups], rotation=60,
                  ha="right", fontsize=7)
    ax.set(ylabel="fraction of channels selected", ylim=(0, 1))
    ax.legend(fontsize=8)
    return _finish(fig, out, show)


def _norm_trace(pruner) -> np.ndarray:
    if not pruner.norm_trace:
        raise ValueError("the pruner kept no trace: build SmoothPruning(..., trace=True) and train")
    return torch.stack(pruner.norm_trace).cpu().numpy()          # [applications, S]


def norm_trajectories(pruner, k: int = 6, out=None, show: bool = True, seed: int = 0):
    """Norm of decaying structures after each decay application, against the Smooth Pruning
    schedule (N − n)/N · L_init.

    Uses the structures selected in the pruner's first round at step 0 (those whose first traced
    norm is within half a decay step of (N − 1)/N · L_init; it is not exact where two decaying
    structures share weight entries, see ``pruning.decay``). Left: ``k`` of them in absolute units, each with its schedule
    (dashed). Right: all of them divided by L_init, the common schedule in black, and ``k``
    never-selected structures (grey, divided by their first traced norm) for contrast.
    """
    trace = _norm_trace(pruner)
    N = pruner.decay_steps
    l_init = pruner.l_init.cpu().numpy()
    ratio = trace[0] / np.maximum(l_init, 1e-12)
    first = (l_init > 0) & (np.abs(ratio - (N - 1) / N) < 0.5 / N)
    sel = np.flatnonzero(first)
    if len(sel) == 0:
        raise ValueError("no structure was selected at step 0 in this pruner's trace")
    free = np.flatnonzero(l_init == 0)
    rng = np.random.default_rng(seed)
    # k selected structures spread over the range of L_init, so the panel shows small and large
    shown = sel[np.argsort(l_init[sel])][np.linspace(0, len(sel) - 1, min(k, len(sel))).astype(int)]
    n = np.arange(len(trace) + 1)                                 # decay applications, 0 = L_init
    ideal = np.clip((N - n) / N, 0, None)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for j, s in enumerate(shown):
        color = sns.color_palette()[j % 10]
        a.plot(n, np.r_[l_init[s], trace[:, s]], color=color, lw=1.5, label=f"structure {s}")
        a.plot(n, l_init[s] * ideal, color=color, ls="--", lw=1)
    a.axvline(N, color="k", lw=0.8, ls=":")
    a.set(xlabel="decay applications n (0 = selection)", ylabel="‖x‖₂ of the structure",
          title="selected structures (dashed: (N−n)/N · L_init)")
    a.legend(fontsize=7)
    rel = np.vstack([np.ones(len(sel)), trace[:, sel] / l_init[sel]])
    b.plot(n, rel, color="C0", alpha=0.15, lw=0.8)
    if len(free):
        others = rng.choice(free, min(k, len(free)), replace=False)
        b.plot(n[1:], trace[:, others] / np.maximum(trace[0, others], 1e-12), color="grey",
               lw=0.8, alpha=0.8)
        b.plot([], [], color="grey", label="not selected (÷ first norm)")
    b.plot(n, ideal, color="k", lw=2, ls="--", label="(N−n)/N")
    b.plot([], [], color="C0", label=f"{len(sel)} selected (÷ L_init)")
    b.axvline(N, color="k", lw=0.8, ls=":")
    b.set(xlabel="decay applications n", ylabel="relative norm", title=f"all selected, N = {N}")
    b.legend(fontsize=7)
    return _finish(fig, out, show)


def rectify_distributions(rectifier, out=None, show: bool = True, clip: float = 0.5):
    """Distributions of the (smoothed) C_rate and C_len of decaying structures over all recorded
    steps, with the thresholds T_rate and T_len and the released structures marked.

    Needs ``SelfRectifying(record=True)``. Axes are cut at the ``clip`` and ``100 − clip``
    percentiles (and always include the thresholds) so that a few outliers do not flatten the rest;
    the titles say how many structure-steps fall outside.
    """
    if not rectifier.trace:
        raise ValueError("no Self-Rectifying trace: build SelfRectifying(record=True) and train "
                         "with more than one selection round (releases are checked before the last)")
    t = torch.stack(rectifier.trace).cpu().numpy()                # [steps, 3, S]
    mask = t[:, 2] > 0
    rate, length = t[:, 0][mask], t[:, 1][mask]
    released = pd.DataFrame(rectifier.log, columns=["c_rate", "c_len"])

    def limits(v, thr):
        lo, hi = np.percentile(v, [clip, 100 - clip]) if len(v) else (thr, thr)
        pad = 0.05 * (max(hi, thr) - min(lo, thr) or 1)
        return min(lo, thr) - pad, max(hi, thr) + pad

    rx, lx = limits(rate, rectifier.t_rate), limits(length, rectifier.t_len)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    outside = lambda v, lim: int(((v < lim[0]) | (v > lim[1])).sum())  # noqa: E731
    a.hist(rate, bins=50, range=rx, color="C0")
    a.axvline(rectifier.t_rate, color="C3", ls="--", label=f"T_rate = {rectifier.t_rate}")
    a.set(xlabel="C_rate (EMA)", ylabel="structure-steps", xlim=rx, yscale="log",
          title=f"{len(rate)} decaying structure-steps ({outside(rate, rx)} off axis)")
    a.legend(fontsize=8)
    b.hist(length, bins=50, range=lx, color="C1")
    b.axvline(rectifier.t_len, color="C3", ls="--", label=f"T_len = {rectifier.t_len}")
    b.set(xlabel="C_len (EMA)", xlim=lx, yscale="log",
          title=f"({outside(length, lx)} off axis)")
    b.legend(fontsize=8)
    c.scatter(rate, length, s=3, alpha=0.2, color="grey",
              label="decaying structure-steps")
    c.axvline(rectifier.t_rate, color="C3", ls="--", lw=0.8)
    c.axhline(rectifier.t_len, color="C3", ls="--", lw=0.8)
    if len(released):
        c.scatter(released["c_rate"], released["c_len"], marker="x",
                  color="C3", s=30, label=f"released ({len(released)})")
    c.set(xlabel="C_rate", ylabel="C_len", xlim=rx, ylim=lx,
          title=f"release rule: {rectifier.rule}")
    c.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, out, show)


def rounds_table(pruner) -> pd.DataFrame:
    """One row per selection round of a ``SmoothPruning``: the step, how many structures were
    already decaying or pruned, how many Self-Rectifying released since the previous round, and
    how many the round newly selected (replacements included)."""
    rounds = pd.DataFrame(pruner.round_log, columns=["step", "taken_before", "selected"])
    steps = pd.Series([r["step"] for r in pruner.release_log], dtype="int64")
    edges = [-1] + rounds["step"].tolist()
    rounds["released_since_last"] = [int(((steps > lo) & (steps <= hi)).sum())
                                     for lo, hi in zip(edges[:-1], edges[1:])]
    return rounds[["step", "taken_before", "released_since_last", "selected"]]


def accuracy_through_pruning(records, start: dict | None = None, out=None, show: bool = True):
    """Per-epoch test top-1 of pruning runs (records from ``run_pruning``), one line per method,
    with the dense model's accuracy as a reference line.

    ``start``: optional ``{method: accuracy at epoch 0}``, e.g. the single-step model right after
    removal, before any fine-tuning. Where a record carries its decay schedule (``sp``, ``dpm``),
    the epochs during which structures were decaying are shaded.
    """
    records = records.to_dict("records") if isinstance(records, pd.DataFrame) else list(records)
    if not records:
        raise ValueError("no records to plot")
    start = start or {}
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, r in enumerate(records):
        h = pd.DataFrame(r["history"])
        x, y = h["epoch"].tolist(), h["test_acc"].tolist()
        if r.get("method") in start:
            x, y = [0] + x, [start[r["method"]]] + y
        color = sns.color_palette()[i % 10]
        ax.plot(x, y, marker="o", ms=3, color=color,
                label=f"{r.get('method', r['kind'])} (final {h['test_acc'].iloc[-1]:.1f}%)")
        decay = r.get("decay")
        if decay and decay.get("rounds"):
            spe = h["step"].iloc[0] / h["epoch"].iloc[0]
            first = decay["rounds"][0]["step"] / spe
            last = (decay["rounds"][-1]["step"] + decay["decay_steps"]) / spe
            ax.axvspan(first, last, color=color, alpha=0.08)
    dense = records[0].get("dense_top1")
    if dense is not None:
        ax.axhline(dense, color="k", ls=":", lw=1, label=f"dense {dense:.1f}%")
    ax.set(xlabel="fine-tuning epoch", ylabel="test top-1 (%)",
           title="accuracy through pruning (shaded: structures decaying)")
    ax.legend(fontsize=8)
    return _finish(fig, out, show)


def sparsity_curves(records, out=None, show: bool = True):
    """Group sparsity (fraction of zero groups) and test top-1 per epoch, one line per record
    (OTOv2 runs log ``group_sparsity`` in their history)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, r in enumerate(records):
        h = pd.DataFrame(r["history"])
        label = f"{r.get('method')} s{r.get('seed')}"
        a.plot(h["epoch"], h["group_sparsity"], color=sns.color_palette()[i % 10], label=label)
        if "committed" in h:
            a.plot(h["epoch"], h["committed"], ls=":", color=sns.color_palette()[i % 10])
        b.plot(h["epoch"], h["test_acc"], color=sns.color_palette()[i % 10], label=label)
    if records and "target_sparsity" in records[0]:
        a.axhline(records[0]["target_sparsity"], color="grey", ls="--", lw=1, label="target")
    a.set(xlabel="epoch", ylabel="group sparsity (dotted: committed)")
    b.set(xlabel="epoch", ylabel="test top-1 (%)")
    a.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, out, show)


def layer_widths(models: dict, out=None, show: bool = True):
    """Output channels of every convolution, one line per model (``{label: model}``): where each
    method took its channels from."""
    import torch.nn as nn

    fig, ax = plt.subplots(figsize=(9, 3.2))
    for i, (label, model) in enumerate(models.items()):
        widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        ax.plot(range(len(widths)), widths, marker=".", label=label, color=sns.color_palette()[i])
    ax.set(xlabel="convolution (network order)", ylabel="output channels")
    ax.legend(fontsize=8)
    return _finish(fig, out, show)

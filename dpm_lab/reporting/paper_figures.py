"""Every committed figure, drawn again from recorded runs and the papers' numbers alone, with no
training: ``python -m dpm_lab figures`` (and notebook 09).

- ``accuracy_vs_macs_<host>``: our runs per method and target, as the mean final top-1 with its
  95 % t-interval over seeds against the MACs kept. Beside them, in their own panel since the
  data and models differ, are the paper's rows for that host from ``data/paper_results.csv``.
- ``releases_<host>``: Self-Rectifying's release events of the DPM runs (step, layer, seed), a
  panel per configuration.
- ``norm_trajectories_<host>``: the first round's sampled norms (``pruning.NormSample``) against
  the schedule (N − n)/N, released structures marked, per method.
- ``widths_<host>``: output channels of every convolution, dense and after each method (mean
  over seeds), from the records that kept their widths.
- ``sr_ablation``: validation top-1 against each Self-Rectifying setting that the recorded
  ablation varies, with the SP runs of the same ablation as a reference.
- ``ablation_<knob>_<profile>``: the ablations of ``configs/ablations`` (records under
  ``results/reference/ablations``), one figure per knob (N, T_rate, T_len, window, rule,
  criterion, target): validation top-1, mean and 95 % t-interval over seeds, per method, with
  every other knob at its ablation default; a method the knob does not apply to (SP under an SR
  threshold, single-step under N) is drawn as a band across the panel.

One seaborn style, labelled axes, PNG and PDF. A figure whose records do not exist is skipped and
named in the returned notes, never drawn from anything else.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..experiments.results import load_records
from ..experiments.runspec import RunSpec, SR_DEFAULTS, describe, resolve
from ..hosts import HOSTS
from ..pruning.norm_sample import thin
from ..training.data import dataset_label
from .figures import (HOST_NAMES, dodge, final_metric, layer_widths, macs_axis, mean_widths,
                      method_knobs, method_label, method_style, provenance_footnote, series_label,
                      series_styles, summarize, varying)
from .paper import load_paper_results
from .stats import adjust, interval, paired_differences

HOST_FRAMEWORK = {"depgraph": ("DepGraph", "resnet56"), "otov2": ("OTOv2", "vgg16_bn"),
                  "gatedecorator": ("Gate Decorator", "vgg16")}
STYLE = dict(style="whitegrid", context="paper", palette="colorblind")
# the profiles whose records figures/reference draws: mini (the CIFAR-10 slice) and full (all of
# CIFAR-10, issue 25); a profile without records is noted and skipped
REFERENCE_PROFILES = ("mini", "full")


def _save(fig, out: Path, name: str, data: pd.DataFrame) -> list[Path]:
    """The figure as PNG and PDF, and ``data``, the numbers it draws, as ``name.csv`` beside
    them (floats to 10 significant digits). Images differ with fonts and matplotlib versions;
    the CSV does not, so it is what shows that a redraw from the records is the committed one
    (``tests/test_paper_figures.py``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight", metadata={"CreationDate": None}
                    if p.suffix == ".pdf" else None)
    plt.close(fig)
    data.to_csv(out / f"{name}.csv", index=False, float_format="%.10g", lineterminator="\n")
    return [*paths, out / f"{name}.csv"]


@contextlib.contextmanager
def _seeded(seed: int = 0):
    """seaborn's strip-plot jitter draws from NumPy's global generator: seed it for the plot
    (and restore it), so the same records give the same figure."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _with_knobs(records: pd.DataFrame) -> pd.DataFrame:
    knobs = pd.DataFrame(list(records["config"].map(describe)), index=records.index)
    return pd.concat([records.drop(columns=[c for c in knobs if c in records]), knobs], axis=1)


def _knobs(table: pd.DataFrame, row) -> str:
    """The knobs, other than the target, that tell ``row``'s configuration apart from the other
    configurations of its method in the summary ``table`` (e.g. OTOv2's DHSPG deviations)."""
    same = table[table["method"] == row["method"]]
    knobs = ", ".join(f"{k}={'default' if pd.isna(row[k]) else row[k]}"
                      for k in varying(same, keep=()) if k != "target")
    return f" ({knobs})" if knobs else ""


def _config_labels(records: pd.DataFrame) -> pd.Series:
    """Per record: ``method, target (knobs)``, one label per configuration, so that a figure
    never pools runs of different configurations under one name."""
    table = summarize(records)
    labels = {row["config_id"]: f"{row['method']}, {row['target']}{_knobs(table, row)}"
              for _, row in table.iterrows()}
    return records["config_id"].map(labels)


def _config_words(records: pd.DataFrame) -> pd.Series:
    """Per record: its configuration in words with its target (``_words``), for legends and
    titles; ``_config_labels`` stays the key that the figures' CSVs record."""
    table = summarize(records)
    words = {row["config_id"]: f"{_words(table, row, row['host'])}, {row['target']}"
             for _, row in table.iterrows()}
    return records["config_id"].map(words)


def _words(table: pd.DataFrame, row, host: str) -> str:
    """``row``'s configuration in words, as a legend says it: the method as the paper's tables
    name it under ``host``, then the knobs that tell it from its method's other configurations
    (``figures.series_label``); DepGraph's variant without sparse learning says so."""
    words = series_label(row["method"], method_knobs(table, row), host)
    return words + (", without sparse learning" if str(row["target"]).endswith("w/o SL") else "")


def _our_points(records: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (equal but for the seed): a label (the method, plus the knobs that
    differ between configurations other than the target), the target, the seeds, the mean final
    top-1 with its 95 % t-interval, and the mean MACs kept; then, for drawing and not written to
    the figure's CSV (``POINT_COLUMNS``), the method and the label in words."""
    table = summarize(records)
    rows = []
    for _, row in table.iterrows():
        g = records[records["config_id"] == row["config_id"]]
        mean, low, high = interval(g["final_top1"])
        # DepGraph's variant without sparse learning is another method, not another target
        variant = " w/o SL" if str(row["target"]).endswith("w/o SL") else ""
        rows.append({"label": row["method"] + variant + _knobs(table, row),
                     "target": row["target"], "seeds": len(g), "top1": mean, "low": low,
                     "high": high, "macs": row["macs_ratio"], "method": row["method"],
                     "words": _words(table, row, row["host"])})
    return pd.DataFrame(rows)


POINT_COLUMNS = ["label", "target", "seeds", "top1", "low", "high", "macs"]


def paper_points(framework: str, model: str) -> pd.DataFrame:
    """The paper's rows for ``framework`` on ``model`` with both a top-1 and a FLOPs fraction:
    method, top-1 (%) and FLOPs kept (fraction)."""
    p = load_paper_results(framework=framework, model=model)
    p = p[p["metric"].isin(["top1", "flops_remaining"])]
    wide = p.pivot_table(index=["section", "method"], columns="metric", values="value",
                         aggfunc="first").dropna().reset_index()
    return pd.DataFrame({"method": wide["method"], "top1": wide["top1"],
                         "macs": wide["flops_remaining"] / 100})


def paper_method(name: str, framework: str) -> tuple[str | None, str]:
    """A paper row's method as ours (``host``, ``sp``, ``dpm``, ``dense``; None for a method we
    do not run) and its variant ("w/o SL" for DepGraph without sparse learning, else "")."""
    rest = name.removeprefix(framework).strip()
    variant = "w/o SL" if rest.startswith("w/o SL") else ""
    rest = rest.removeprefix("w/o SL").strip()
    if name == "unpruned":
        return "dense", ""
    if not name.startswith(framework):
        return None, ""
    return {"": "host", "+ SP": "sp", "+ DPM": "dpm"}.get(rest), variant


# markers of the paper's other methods (EC, Hinge, ...), all in grey: the methods we run are the
# ones in colour
_OTHER_MARKERS = ("<", ">", "h", "p", "d", "8", "H", "1", "2", "3", "4")


def accuracy_vs_macs_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    points = _our_points(records)
    paper = HOST_FRAMEWORK.get(host)
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(11 if paper else 5.5, 4),
                             squeeze=False)
    ax = axes[0][0]
    step = 0.02 * macs_axis(ax, points["macs"])
    x, moved = dodge(points["macs"], step)
    points = points.assign(x=x)
    series = list(points.sort_values("macs").groupby("label", sort=False))
    for (label, g), style in zip(series, series_styles(g["method"].iloc[0] for _, g in series)):
        seeds = "-".join(str(n) for n in sorted({g["seeds"].min(), g["seeds"].max()}))
        ax.errorbar(g["x"], g["top1"], yerr=[g["top1"] - g["low"], g["high"] - g["top1"]],
                    capsize=3, mec=style["color"], label=f"{g['words'].iloc[0]}, {seeds} seeds",
                    **style)
    model, data = records["model"].iloc[0], dataset_label(records["dataset"].iloc[0])
    ax.set(xlabel="MACs kept (fraction of dense)", ylabel="final top-1 (%), mean and 95 % CI",
           title=f"ours: {HOST_NAMES.get(host, host)}, {model} on {data} ({profile})")
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.25))
    if moved:
        legend.set_title(moved, prop={"size": 6})
    if paper:
        framework, paper_model = paper
        pts = paper_points(framework, paper_model)
        ax2 = axes[0][1]
        others = iter(_OTHER_MARKERS)
        for _, p in pts.sort_values("macs", kind="stable").iterrows():
            method, variant = paper_method(p["method"], framework)
            style = (method_style(method) if method else
                     {"color": "dimgrey", "marker": next(others, "."), "ls": "-"})
            if variant:
                style["fillstyle"] = "none"
            ax2.plot(p["macs"], p["top1"], ls="none", ms=7, marker=style["marker"],
                     color=style["color"], mec=style["color"],
                     fillstyle=style.get("fillstyle", "full"),
                     label=p["method"] if method != "dense" else "unpruned")
        macs_axis(ax2, pts["macs"])
        ax2.set(xlabel="FLOPs kept (fraction of dense)", ylabel="top-1 (%)",
                title=f"paper ({framework} table): {paper_model} on full CIFAR-10")
        ax2.legend(fontsize=6, ncol=2, title="in colour: the methods we run; grey: others",
                   title_fontsize=6)
    fig.tight_layout()
    provenance_footnote(fig, records)
    drawn = [points[POINT_COLUMNS].assign(panel="ours")]
    if paper:
        drawn.append(pts.rename(columns={"method": "label"}).assign(panel="paper"))
    return _save(fig, out, f"accuracy_vs_macs_{host}_{profile}",
                 pd.concat(drawn, ignore_index=True))


def host_differences(records: pd.DataFrame, host: str) -> pd.DataFrame:
    """SP − host and DPM − host in final top-1, per configuration, from ``figures.method_pairs``
    (the table ``report`` prints, so the Holm family is the host's whole table), with the paper's
    printed change for the same method and variant (``top1_change`` of
    ``data/paper_results.csv``) above ours. One row per drawn line: ``source`` ours or paper, a
    label in words, the difference, and for ours the 95 % and Holm-adjusted intervals."""
    from .figures import method_pairs

    pairs = method_pairs(records, host)
    pairs = pairs[pairs["comparison"].isin(["sp - host", "dpm - host"])] if len(pairs) else pairs
    framework, model = HOST_FRAMEWORK[host]
    paper = load_paper_results(framework=framework, model=model, metric="top1_change")
    knobs = [c[:-2] for c in pairs if c.endswith("_a") and not c.startswith("config_id")]
    rows = []
    for method in ("sp", "dpm"):
        ours = pairs[pairs["comparison"] == f"{method} - host"]
        for variant in dict.fromkeys([""] + ["w/o SL" for t in ours["target"]
                                             if str(t).endswith("w/o SL")]):
            for _, p in paper.iterrows():
                if paper_method(p["method"], framework) == (method, variant):
                    rows.append({"host": host, "source": "paper", "comparison": f"{method} - host",
                                 "label": f"paper: {p['method']} ({model}, full CIFAR-10)",
                                 "target": "", "diff": p["value"]})
            mine = ours[ours["target"].map(lambda t: str(t).endswith("w/o SL")) == bool(variant)]
            shown = [k for k in knobs if mine[f"{k}_a"].nunique(dropna=False) > 1]
            for _, r in mine.iterrows():
                words = series_label(method, {k: r[f"{k}_a"] for k in shown}, host)
                rows.append({"host": host, "source": "ours", "comparison": f"{method} - host",
                             "label": f"ours: {words}" + (", without sparse learning"
                                                          if variant else ""),
                             "target": r["target"], "seeds": r["seeds"], "diff": r["diff"],
                             **{c: r[c] for c in ("ci95_low", "ci95_high", "holm_low",
                                                   "holm_high", "holm_conf", "m", "p", "p_holm")}})
    return pd.DataFrame(rows)


def host_differences_figure(tables: dict, profile: str, out: Path):
    """One panel per host (``tables``: ``{host: host_differences(...)}``): each method's
    difference from the host, ours as the mean with its 95 % interval (thick) and its
    Holm-adjusted interval over the host's table (thin), the paper's printed change (a star, one
    number without an interval) above ours. Zero is the host."""
    tables = {h: t for h, t in tables.items() if not t.empty}
    if not tables:
        return None
    fig, axes = plt.subplots(len(tables), 1, squeeze=False, sharex=True,
                             figsize=(10, 0.9 + 0.32 * sum(len(t) for t in tables.values())),
                             gridspec_kw={"height_ratios": [len(t) + 1 for t in tables.values()]})
    for ax, (host, t) in zip(axes[:, 0], tables.items()):
        y = np.arange(len(t))[::-1]
        for yi, (_, r) in zip(y, t.iterrows()):
            style = method_style(r["comparison"].split(" - ")[0])
            if r["source"] == "paper":
                ax.plot(r["diff"], yi, marker="*", ms=11, ls="none", color=style["color"],
                        mec="black", mew=0.5)
                continue
            ax.plot([r["holm_low"], r["holm_high"]], [yi, yi], color=style["color"], lw=1)
            ax.plot([r["ci95_low"], r["ci95_high"]], [yi, yi], color=style["color"], lw=4,
                    alpha=0.6, solid_capstyle="butt")
            ax.plot(r["diff"], yi, marker=style["marker"], ms=6, ls="none", color=style["color"])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, t["label"], fontsize=7)
        m = t["m"].dropna()
        ax.set_title(f"{HOST_NAMES[host]}: each method minus {HOST_NAMES[host]} alone (ours: "
                     f"{profile}; Holm over the {int(m.iloc[0])} comparisons of its table)"
                     if len(m) else HOST_NAMES[host], fontsize=8)
    axes[-1][0].set_xlabel("difference from the host in final top-1 (percentage points)")
    handles = [plt.Line2D([], [], color="dimgrey", lw=4, alpha=0.6, marker="o",
                          label="ours: mean over seeds, 95 % t-interval"),
               plt.Line2D([], [], color="dimgrey", lw=1,
                          label="ours: Holm-adjusted interval (as report prints it)"),
               plt.Line2D([], [], color="dimgrey", marker="*", ms=11, mec="black", mew=0.5,
                          ls="none", label="paper: the printed change (one number, no interval)")]
    axes[0][0].legend(handles=handles, fontsize=6, loc="lower left", bbox_to_anchor=(0, 1.12),
                      ncol=2)
    fig.tight_layout()
    return _save(fig, out, f"host_differences_{profile}", pd.concat(tables.values(),
                                                                    ignore_index=True))


def releases_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    """One panel per configuration of the DPM runs (target and knobs: DepGraph's runs with and
    without sparse learning, or OTOv2's DHSPG deviations, are never pooled)."""
    dpm = records[records["method"] == "dpm"].assign(label=_config_labels, words=_config_words)
    rows = [{"label": r["label"], "seed": r["seed"], "step": e["step"], "layer": e["group"]}
            for _, r in dpm.iterrows() for e in (r.get("releases") or [])]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    order = sorted(df["layer"].unique())
    labels = sorted(df["label"].unique())
    ncols = min(2, len(labels))
    nrows = -(-len(labels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(8 * ncols, (0.25 * len(order) + 1.8) * nrows),
                             sharey=True, squeeze=False)
    for ax, label in zip(axes.flat, labels):
        one = df[df["label"] == label]
        with _seeded():
            sns.stripplot(data=one, x="step", y="layer", hue="seed", order=order, ax=ax, size=4,
                          jitter=0.2, palette="deep")
        runs = dpm[dpm["label"] == label]
        ax.set(xlabel="optimiser step of the release", ylabel="layer (group root)")
        ax.set_title(f"{runs['words'].iloc[0]}\n({profile}; {len(one)} releases, "
                     f"{runs['seed'].nunique()} seeds)", fontsize=9)
        ax.legend(title="seed", fontsize=7)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    fig.suptitle("Self-Rectifying releases", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, f"releases_{host}_{profile}", df)


def norm_trajectories_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    """One panel per method: the sampled norm trajectories of the first selection round
    (``pruning.NormSample``), relative to their first norm, against n / N so that runs with
    different N share one axis. Chosen structures follow (N − n)/N to exactly zero; those that
    Self-Rectifying released leave the schedule; free structures are shown for contrast. Samples
    recorded before ``NormSample``'s bounds are thinned to them (``pruning.thin``), so every run
    draws the same number of lines; the legend counts all released structures."""
    if "norm_sample" not in records:
        return None
    kept = records[records["norm_sample"].map(lambda s: isinstance(s, dict))].copy()
    if kept.empty:
        return None
    kept["norm_sample"] = kept["norm_sample"].map(thin)
    methods = list(dict.fromkeys(kept["method"]))
    colors = {"chosen": sns.color_palette("colorblind")[0],
              "released": sns.color_palette("colorblind")[3],
              "free": "grey"}
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), sharey=True,
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        runs = kept[kept["method"] == method]
        count = dict.fromkeys(colors, 0)
        total_released = 0
        for sample in runs["norm_sample"]:
            x = np.array(sample["steps"]) / sample["decay_steps"]
            for role, rel in zip(sample["role"], sample["relative"]):
                ax.plot(x, rel, color=colors[role], lw=0.8, alpha=0.25 if role == "released" else 0.6,
                        zorder=3 if role == "chosen" else 2)
                count[role] += 1
            total_released += sample["released_total"]
        x = np.linspace(0, 2, 201)
        ax.plot(x, np.clip(1 - x, 0, None), color="k", ls=":", lw=1.5, label="(N − n)/N")
        for role, color in colors.items():
            if count[role]:
                of = f" of {total_released}" if role == "released" else ""
                ax.plot([], [], color=color, label=f"{role} ({count[role]}{of})")
        ax.set(xlabel="decay applications n / N", ylabel="norm / first norm",
               title=f"{method_label(method, host)}: {len(runs)} run{'s' * (len(runs) > 1)} of "
                     f"{runs['config_id'].nunique()} configuration(s)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Smooth Pruning norm trajectories of the first round, {host} ({profile})",
                 fontsize=9)
    fig.tight_layout()
    # the lines are the records' samples as they are: the CSV fingerprints each drawn line
    lines = [{"method": r["method"], "seed": r["seed"], "structure": s, "role": role,
              "N": r["norm_sample"]["decay_steps"], "points": len(rel), "first": rel[0],
              "last": rel[-1], "min": min(rel), "max": max(rel), "mean": float(np.mean(rel))}
             for _, r in kept.iterrows()
             for s, role, rel in zip(*(r["norm_sample"][k] for k in ("structures", "role",
                                                                     "relative")))]
    return _save(fig, out, f"norm_trajectories_{host}_{profile}", pd.DataFrame(lines))


def widths_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    """Output channels of every convolution before (dense) and after each method, averaged over
    the seeds of the records that kept their widths (older records did not and are left out)."""
    if "widths" not in records:
        return None
    kept = records[records["widths"].map(lambda w: isinstance(w, list))].copy()
    if kept.empty:
        return None
    kept["label"] = _config_labels(kept) + ", " + kept.groupby("config_id")["seed"].transform(
        "nunique").map(lambda n: f"{n} seed{'s' * (n > 1)}")
    kept["words"] = _config_words(kept) + ", " + kept["label"].str.rsplit(", ", n=1).str[-1]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    widths = mean_widths(kept, by="label")
    words = dict(zip(kept["label"], kept["words"])) | {"dense": "dense"}
    methods = dict(zip(kept["words"], kept["method"])) | {"dense": "dense"}
    layer_widths({words[label]: w for label, w in widths.items()}, ax=ax, methods=methods)
    model, data = kept["model"].iloc[0], dataset_label(kept["dataset"].iloc[0])
    ax.set_title(f"per-layer widths, {host}: {model} on {data} ({profile}; dense and the mean "
                 f"over seeds of each method)")
    return _save(fig, out, f"widths_{host}_{profile}",
                 pd.DataFrame([{"label": label, "conv": i, "width": w}
                               for label, ws in widths.items() for i, w in enumerate(ws)]))


# the knobs ``configs/ablations`` varies, one at a time, with their axis labels
ABLATED = {"N": "N (optimiser steps to zero)", "t_rate": "T_rate (threshold on C_rate)",
           "t_len": "T_len (threshold on C_len)", "window": "window (steps averaged)",
           "rule": "release rule", "criterion": "importance criterion",
           "target": "MACs target (fraction of dense)"}


def _order(values) -> list:
    """Ablation values in axis order: by the number in them where there is one ("MACs 0.25"
    sorts as 0.25, largest first for targets), else as written."""
    def number(v):
        try:
            return float(str(v).split()[-1])
        except ValueError:
            return None
    nums = [number(v) for v in values]
    if all(n is not None for n in nums):
        return [v for _, v in sorted(zip(nums, values), key=lambda t: t[0],
                                     reverse=str(values[0]).startswith("MACs"))]
    return sorted(values, key=str)


def _seeds(counts) -> str:
    """Seeds behind one method's points: "3 seeds", or "3-5 seeds" where the points differ."""
    counts = pd.Series(counts).dropna().astype(int)
    low, high = int(counts.min()), int(counts.max())
    return f"{low}-{high} seeds" if low != high else f"{high} seed{'s' * (high != 1)}"


def _ablation_panels(records: pd.DataFrame, ablated=ABLATED):
    """``(knob, default, runs)`` per knob of ``ablated`` (in its order) that the records vary:
    the runs whose every other knob is at its default (the value most runs share: the default
    point is the one every ablation file contains; 0.25x MACs, not the package's 0.5x) or does
    not apply to their method. Every knob that varies is held, the ablated ones and any other
    (a rate_reference variant, say), so that no point pools two configurations."""
    df = _with_knobs(records)
    knobs = [k for k in varying(df, keep=()) if k not in ("method", "host")]
    # a tie (one ablation file alone) goes to the package's default for the records' profile
    package = describe(resolve(RunSpec(profile=df["profile"].iloc[0])).config)
    base = {}
    for k in knobs:
        counts = df[k].value_counts()
        top = list(counts.index[counts == counts.max()])
        base[k] = package.get(k) if package.get(k) in top else top[0]
    for k in [k for k in ablated if k in knobs]:
        others = [df[o].isna() | (df[o] == base[o]) for o in knobs if o != k]
        panel = df[np.logical_and.reduce(others)] if others else df
        if panel[k].nunique() >= 2:
            yield k, base[k], panel


def sr_ablation_figure(records: pd.DataFrame, profile: str, out: Path):
    """One panel per Self-Rectifying setting the selection runs vary
    (``results/reference/self-rectifying``, seed 0): each DPM run that differs from the defaults
    in that setting alone, as a point, with the SP run at the same criterion as a line. Panels
    come from :func:`_ablation_panels`, so every other knob is held as in the ablation figures."""
    panels = {k: panel for k, _, panel in _ablation_panels(records, SR_DEFAULTS)}
    if not panels:
        return None
    metric = final_metric(records)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True,
                             squeeze=False)
    for ax, (k, panel) in zip(axes[0], panels.items()):
        sp = panel[panel["method"] == "sp"]
        with _seeded():
            sns.stripplot(data=panel[panel["method"] == "dpm"], x=k, y=metric, ax=ax,
                          color=method_style("dpm")["color"], marker=method_style("dpm")["marker"],
                          size=6)
        if not sp.empty:
            ax.axhline(sp[metric].mean(), color=method_style("sp")["color"], ls="--", lw=1,
                       label=f"SP ({len(sp)} run{'s' * (len(sp) > 1)})")
        equal = equal_runs(panel, k, metric)
        if equal:
            ax.plot([], [], ls="none", label=_equal_note(k, equal).replace(": one", ":\none"))
            ax.legend(fontsize=6)
        ax.set(xlabel=f"{k} (default {SR_DEFAULTS[k]})", ylabel=f"{metric.replace('_', ' ')} (%)")
    axes[0][0].legend(fontsize=7)
    seeds = sorted(int(x) for x in pd.concat([p["seed"] for p in panels.values()]).unique())
    fig.suptitle(f"Self-Rectifying, one setting at a time from the defaults (DPM, L2 selection, "
                 f"{profile}, seeds {seeds}, validation split)", fontsize=9)
    fig.tight_layout()
    provenance_footnote(fig, records)
    drawn = [panel.loc[panel["method"].isin(["dpm", "sp"]), ["method", "seed", k, metric]]
             .rename(columns={k: "value"}).assign(knob=k) for k, panel in panels.items()]
    return _save(fig, out, "sr_ablation", pd.concat(drawn, ignore_index=True))


def ablation_points(records: pd.DataFrame) -> pd.DataFrame:
    """Per ablated knob, value and method: seeds, mean validation top-1 (final epoch; test top-1
    where a record has no validation split) and its 95 % t-interval, MACs kept and releases.
    ``value`` is None for a method the knob does not apply to (its reference level)."""
    metric = final_metric(records)
    rows = []
    for k, default, panel in _ablation_panels(records):
        for (method, value), g in panel.groupby(["method", panel[k].astype(object).where(
                panel[k].notna(), None)], dropna=False, sort=False):
            if g["config_id"].nunique() > 1:
                raise ValueError(f"{k}={value}, {method}: {g['config_id'].nunique()} "
                                 f"configurations would pool into one point; they differ in "
                                 f"{varying(summarize(g), keep=())}")
            mean, low, high = interval(g[metric])
            rows.append({"knob": k, "value": value, "default": default, "method": method,
                         "seeds": g["seed"].nunique(), "metric": metric, "mean": mean,
                         "low": low, "high": high, "macs_ratio": g["macs_ratio"].mean(),
                         "released": g["released"].mean() if "released" in g else np.nan})
    return pd.DataFrame(rows)


def ablation_differences(records: pd.DataFrame, a: str = "dpm", b: str = "sp") -> pd.DataFrame:
    """Per ablated knob and value: ``a`` − ``b`` paired over seeds (same dense model), with its
    95 % interval and p-value (``stats.paired_differences``), Holm-adjusted over the whole table
    (``stats.adjust``; the default setting, in every knob's panel, counts once in ``m``). Where
    ``b`` has the knob too (N, criterion, target) the pair shares its value; where it does not
    (SP under an SR threshold), every value of ``a`` is paired with ``b``'s one configuration."""
    metric = final_metric(records)
    rows = []
    for k, default, panel in _ablation_panels(records):
        d = paired_differences(panel, a, b, metric=metric, knobs=(k,))
        if d.empty:
            continue
        d = d[d[f"{k}_b"].isna() | (d[f"{k}_a"] == d[f"{k}_b"])]
        rows += [{"knob": k, "value": r[f"{k}_a"], "default": default, "comparison": r["comparison"],
                  "seeds": r["seeds"], "metric": metric, a: r[a], b: r[b], "diff": r["diff"],
                  "diff_std": r["diff_std"], "ci95_low": r["ci95_low"],
                  "ci95_high": r["ci95_high"], "p": r["p"], "config_id_a": r["config_id_a"],
                  "config_id_b": r["config_id_b"]}
                 for _, r in d.iterrows()]
    return adjust(pd.DataFrame(rows))


def equal_runs(panel: pd.DataFrame, knob: str, metric: str, a: str = "dpm",
               b: str = "sp") -> list:
    """The values of ``knob`` at which ``a`` gave the same ``metric`` as ``b`` run for run (every
    seed paired, same dense model: DPM whose Self-Rectifying released nothing is SP), paired as
    in :func:`ablation_differences`. A figure whose point lies exactly on another's says so."""
    d = paired_differences(panel, a, b, metric=metric, knobs=(knob,))
    if d.empty:
        return []
    d = d[d[f"{knob}_b"].isna() | (d[f"{knob}_a"] == d[f"{knob}_b"])]
    same = list(d.loc[(d["diff"] == 0) & (d["diff_std"].fillna(0) == 0), f"{knob}_a"])
    return _order(same) if same else []


def _equal_note(knob: str, values, a: str = "dpm", b: str = "sp") -> str:
    """The legend line for :func:`equal_runs`' values."""
    shown = ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                      for v in values)
    return (f"{method_label(a)} = {method_label(b)} run for run at {knob} {shown}: "
            f"one covers the other")


def ablation_figure(points: pd.DataFrame, knob: str, profile: str, out: Path,
                    equal: list = ()) -> list[Path]:
    """One knob's ablation from :func:`ablation_points`: mean and 95 % t-interval per value and
    method (dodged), each method in its colour and marker (``figures.METHOD_STYLE``), the methods
    the knob does not apply to as a line and band. ``equal``: the values at which DPM equals SP
    run for run (:func:`equal_runs`), named in the legend."""
    one = points[points["knob"] == knob]
    order = _order(list(one["value"].dropna().unique()))
    methods = list(dict.fromkeys(one["method"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(order) + 2), 3.4))
    swept = [m for m in methods if one[(one["method"] == m)]["value"].notna().any()]
    numeric = all(isinstance(v, (int, float, np.number)) or str(v).startswith("MACs")
                  for v in order)  # lines join the points only along a numeric axis
    for i, m in enumerate(methods):
        g = one[one["method"] == m]
        style = method_style(m)
        if m not in swept:
            row = g.iloc[0]
            ax.axhline(row["mean"], color=style["color"], ls="--", lw=1,
                       label=f"{method_label(m)} (no {knob}; {_seeds(row['seeds'])})")
            if not np.isnan(row["low"]):
                ax.axhspan(row["low"], row["high"], color=style["color"], alpha=0.12, lw=0)
            continue
        g = g.set_index("value").reindex(order)
        x = np.arange(len(order)) + (swept.index(m) - (len(swept) - 1) / 2) * 0.12
        ax.errorbar(x, g["mean"], yerr=[g["mean"] - g["low"], g["high"] - g["mean"]],
                    marker=style["marker"], ls=style["ls"] if numeric else "none",
                    color=style["color"], capsize=3, ms=5, lw=1,
                    label=f"{method_label(m)} ({_seeds(g['seeds'])})")
    if len(equal):
        ax.plot([], [], ls="none", label=_equal_note(knob, equal))
    default = one["default"].iloc[0]

    def tick(v):
        text = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        return text + "*" if v == default else text
    ax.set_xticks(range(len(order)), [tick(v) for v in order])
    metric = "validation" if one["metric"].iloc[0] == "final_val" else "test"
    ax.set(xlabel=f"{ABLATED[knob]}; * default", ylabel=f"final {metric} top-1 (%)")
    ax.set_title(f"{profile}: {knob} ablation, other knobs at their defaults (mean and 95 % "
                 f"t-interval over seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, f"ablation_{knob}_{profile}", one)


def draw_all(reference: Path, out: Path, profile: str = "mini") -> tuple[list[Path], list[str]]:
    """Every figure from the records under ``reference`` (``results/reference``) and the paper
    CSV, into ``out``; returns the files written and notes on what was skipped."""
    sns.set_theme(**STYLE)
    written, notes, differences = [], [], {}
    for host in HOSTS:
        records = load_records(reference / profile / host)
        if records.empty:
            notes.append(f"no {profile} records for {host}: accuracy_vs_macs_{host} skipped")
            continue
        written += accuracy_vs_macs_figure(records, host, profile, out)
        if host in HOST_FRAMEWORK:
            differences[host] = host_differences(records, host)
        paths = releases_figure(records, host, profile, out)
        written += paths or []
        if paths is None:
            notes.append(f"no releases recorded for {host}: releases_{host} skipped")
        paths = norm_trajectories_figure(records, host, profile, out)
        written += paths or []
        if paths is None:
            notes.append(f"no {host} records kept a norm sample: norm_trajectories_{host} skipped")
        paths = widths_figure(records, host, profile, out)
        written += paths or []
        if paths is None:
            notes.append(f"no {host} records kept their widths: widths_{host} skipped")
    paths = host_differences_figure(differences, profile, out)
    written += paths or []
    if paths is None:
        notes.append(f"no {profile} host records: host_differences skipped")
    sr = load_records(reference / "self-rectifying" / profile / "core")
    paths = None if sr.empty else sr_ablation_figure(sr, profile, out)
    written += paths or []
    if paths is None:
        notes.append("no Self-Rectifying ablation records: sr_ablation skipped")
    ablations = load_records(reference / "ablations" / profile / "core")
    points = pd.DataFrame() if ablations.empty else ablation_points(ablations)
    for knob in ABLATED:
        if not points.empty and knob in set(points["knob"]):
            panel = next(p for k, _, p in _ablation_panels(ablations) if k == knob)
            equal = equal_runs(panel, knob, final_metric(ablations))
            written += ablation_figure(points, knob, profile, out, equal)
        else:
            notes.append(f"no {profile} ablation records vary {knob}: ablation_{knob} skipped")
    return written, notes

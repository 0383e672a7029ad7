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

from .data import dataset_label
from .figures import (final_metric, layer_widths, mean_widths, provenance_footnote, summarize,
                      varying)
from .paper import load_paper_results
from .results import load_records
from .runspec import HOSTS, SR_DEFAULTS, RunSpec, describe, resolve
from .stats import adjust, interval, paired_differences

HOST_FRAMEWORK = {"depgraph": ("DepGraph", "resnet56"), "otov2": ("OTOv2", "vgg16_bn"),
                  "gatedecorator": ("Gate Decorator", "vgg16")}
STYLE = dict(style="whitegrid", context="paper")


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


def _our_points(records: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (equal but for the seed): a label (the method, plus the knobs that
    differ between configurations other than the target), the target, the seeds, the mean final
    top-1 with its 95 % t-interval, and the mean MACs kept."""
    table = summarize(records)
    rows = []
    for _, row in table.iterrows():
        g = records[records["config_id"] == row["config_id"]]
        mean, low, high = interval(g["final_top1"])
        # DepGraph's variant without sparse learning is another method, not another target
        variant = " w/o SL" if str(row["target"]).endswith("w/o SL") else ""
        rows.append({"label": row["method"] + variant + _knobs(table, row),
                     "target": row["target"], "seeds": len(g), "top1": mean, "low": low,
                     "high": high, "macs": row["macs_ratio"]})
    return pd.DataFrame(rows)


def paper_points(framework: str, model: str) -> pd.DataFrame:
    """The paper's rows for ``framework`` on ``model`` with both a top-1 and a FLOPs fraction:
    method, top-1 (%) and FLOPs kept (fraction)."""
    p = load_paper_results(framework=framework, model=model)
    p = p[p["metric"].isin(["top1", "flops_remaining"])]
    wide = p.pivot_table(index=["section", "method"], columns="metric", values="value",
                         aggfunc="first").dropna().reset_index()
    return pd.DataFrame({"method": wide["method"], "top1": wide["top1"],
                         "macs": wide["flops_remaining"] / 100})


def accuracy_vs_macs_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    points = _our_points(records)
    paper = HOST_FRAMEWORK.get(host)
    fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(11 if paper else 5.5, 4),
                             squeeze=False)
    ax = axes[0][0]
    for i, (label, g) in enumerate(points.sort_values("macs").groupby("label", sort=False)):
        seeds = "-".join(str(n) for n in sorted({g["seeds"].min(), g["seeds"].max()}))
        ax.errorbar(g["macs"], g["top1"], yerr=[g["top1"] - g["low"], g["high"] - g["top1"]],
                    marker="o", capsize=3, color=sns.color_palette()[i],
                    label=f"{label}, {seeds} seeds")
    model, data = records["model"].iloc[0], dataset_label(records["dataset"].iloc[0])
    ax.set(xlabel="MACs kept (fraction of dense)", ylabel="final top-1 (%), mean and 95 % CI",
           title=f"ours: {host}, {model} on {data} ({profile})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2))
    if paper:
        framework, paper_model = paper
        pts = paper_points(framework, paper_model)
        ax2 = axes[0][1]
        sns.scatterplot(data=pts, x="macs", y="top1", hue="method", style="method", ax=ax2, s=50)
        ax2.set(xlabel="FLOPs kept (fraction of dense)", ylabel="top-1 (%)",
                title=f"paper ({framework} table): {paper_model} on full CIFAR-10")
        ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    provenance_footnote(fig, records)
    drawn = [points.assign(panel="ours")]
    if paper:
        drawn.append(pts.rename(columns={"method": "label"}).assign(panel="paper"))
    return _save(fig, out, f"accuracy_vs_macs_{host}_{profile}",
                 pd.concat(drawn, ignore_index=True))


def releases_figure(records: pd.DataFrame, host: str, profile: str, out: Path):
    """One panel per configuration of the DPM runs (target and knobs: DepGraph's runs with and
    without sparse learning, or OTOv2's DHSPG deviations, are never pooled)."""
    dpm = records[records["method"] == "dpm"].assign(label=_config_labels)
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
        ax.set_title(f"{host} + {label}\n({profile}; {len(one)} releases, "
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
    Self-Rectifying released leave the schedule; free structures are shown for contrast."""
    if "norm_sample" not in records:
        return None
    kept = records[records["norm_sample"].map(lambda s: isinstance(s, dict))]
    if kept.empty:
        return None
    methods = list(dict.fromkeys(kept["method"]))
    colors = {"chosen": sns.color_palette()[0], "released": sns.color_palette()[3],
              "free": "grey"}
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), sharey=True,
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        runs = kept[kept["method"] == method]
        count = dict.fromkeys(colors, 0)
        for sample in runs["norm_sample"]:
            N = sample["decay_steps"]
            for role, rel in zip(sample["role"], sample["relative"]):
                x = np.arange(len(rel)) / N
                ax.plot(x, rel, color=colors[role], lw=0.8, alpha=0.25 if role == "released" else 0.6,
                        zorder=3 if role == "chosen" else 2)
                count[role] += 1
        x = np.linspace(0, 2, 201)
        ax.plot(x, np.clip(1 - x, 0, None), color="k", ls=":", lw=1.5, label="(N − n)/N")
        for role, color in colors.items():
            if count[role]:
                ax.plot([], [], color=color, label=f"{role} ({count[role]})")
        ax.set(xlabel="decay applications n / N", ylabel="norm / first norm",
               title=f"{method}: {len(runs)} run{'s' * (len(runs) > 1)} of "
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
    fig, ax = plt.subplots(figsize=(9, 3.4))
    widths = mean_widths(kept, by="label")
    layer_widths(widths, ax=ax)
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
                          color=sns.color_palette()[0], size=6)
        if not sp.empty:
            ax.axhline(sp[metric].mean(), color="grey", ls="--", lw=1,
                       label=f"SP ({len(sp)} run{'s' * (len(sp) > 1)})")
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


def ablation_figure(points: pd.DataFrame, knob: str, profile: str, out: Path) -> list[Path]:
    """One knob's ablation from :func:`ablation_points`: mean and 95 % t-interval per value and
    method (dodged), the methods the knob does not apply to as a line and band."""
    one = points[points["knob"] == knob]
    order = _order(list(one["value"].dropna().unique()))
    methods = list(dict.fromkeys(one["method"]))
    colors = dict(zip(methods, sns.color_palette(n_colors=len(methods))))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(order) + 2), 3.4))
    swept = [m for m in methods if one[(one["method"] == m)]["value"].notna().any()]
    numeric = all(isinstance(v, (int, float, np.number)) or str(v).startswith("MACs")
                  for v in order)  # lines join the points only along a numeric axis
    for i, m in enumerate(methods):
        g = one[one["method"] == m]
        if m not in swept:
            row = g.iloc[0]
            ax.axhline(row["mean"], color=colors[m], ls="--", lw=1,
                       label=f"{m} (no {knob}; {_seeds(row['seeds'])})")
            if not np.isnan(row["low"]):
                ax.axhspan(row["low"], row["high"], color=colors[m], alpha=0.12, lw=0)
            continue
        g = g.set_index("value").reindex(order)
        x = np.arange(len(order)) + (i - (len(swept) - 1) / 2) * 0.12
        ax.errorbar(x, g["mean"], yerr=[g["mean"] - g["low"], g["high"] - g["mean"]],
                    fmt="o-" if numeric else "o", color=colors[m], capsize=3, ms=5, lw=1,
                    label=f"{m} ({_seeds(g['seeds'])})")
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
    written, notes = [], []
    for host in HOSTS:
        records = load_records(reference / profile / host)
        if records.empty:
            notes.append(f"no {profile} records for {host}: accuracy_vs_macs_{host} skipped")
            continue
        written += accuracy_vs_macs_figure(records, host, profile, out)
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
    sr = load_records(reference / "self-rectifying" / profile / "core")
    paths = None if sr.empty else sr_ablation_figure(sr, profile, out)
    written += paths or []
    if paths is None:
        notes.append("no Self-Rectifying ablation records: sr_ablation skipped")
    ablations = load_records(reference / "ablations" / profile / "core")
    points = pd.DataFrame() if ablations.empty else ablation_points(ablations)
    for knob in ABLATED:
        if not points.empty and knob in set(points["knob"]):
            written += ablation_figure(points, knob, profile, out)
        else:
            notes.append(f"no {profile} ablation records vary {knob}: ablation_{knob} skipped")
    return written, notes

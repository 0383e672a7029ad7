"""Figures, each drawn only from recorded results (records from ``dpm_lab.experiments.results``).

Every function returns the path of the PNG it wrote under ``$DPM_LAB_HOME/figures`` (or
``out``). The notebook helpers at the end also draw from live pruning objects (norm traces,
Self-Rectifying signals) and save only when given ``out``.

Tables and figures pool runs only when their complete configurations are equal up to the seed
(the record's ``config_id``); the knobs that tell pooled groups apart come from
``runspec.describe``, and the git revisions behind every group are listed beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..errors import DpmLabError
from ..experiments.runspec import describe
from ..training.data import dataset_label
from ..training.paths import figures_dir


def _save(fig, name: str, out=None) -> Path:
    path = Path(out) if out else figures_dir() / name
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
    if "val_acc" in h:
        b.plot(h["epoch"], h["val_acc"], marker=".", color="C2", label="validation")
        b.legend(fontsize=8)
    rev = record["git"] + ("-dirty" if record.get("git_dirty") else "")
    title = (f"{record['kind']} {record['model']} / {dataset_label(record['dataset'])} "
             f"({record['profile']}, seed "
             f"{record['seed']}, run {record['run_id']}, rev {rev}): final {record['final_top1']:.2f}%")
    fig.suptitle(title, fontsize=9)
    method = f"_{record['method']}" if record.get("method") else ""
    name = (f"{record['kind']}{method}_{record['model']}_{record['dataset']}_{record['profile']}"
            f"_s{record['seed']}_{record['run_id']}.png")
    path = _save(fig, name, out)
    if not show:
        plt.close(fig)
    return path


def revisions(records: pd.DataFrame) -> list[str]:
    """The distinct code revisions behind ``records`` (``-dirty``: uncommitted changes)."""
    dirty = records.get("git_dirty", pd.Series(False, index=records.index)).fillna(False)
    return sorted(set(records["git"] + np.where(dirty, "-dirty", "")))


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (records with equal ``config_id``, i.e. equal but for the seed):
    its knobs (``runspec.describe``), the seeds, mean ± std of final top-1 (best epoch and
    validation beside it), MACs and params kept, releases per run, and the revisions."""
    rows = []
    for cid, g in records.groupby("config_id", sort=False):
        val = g["final_val"].dropna() if "final_val" in g else pd.Series(dtype=float)
        released = g["released"].dropna() if "released" in g else pd.Series(dtype=float)
        macs = g["macs_ratio"] if "macs_ratio" in g else pd.Series(1.0, index=g.index)
        params = g["params_ratio"] if "params_ratio" in g else pd.Series(1.0, index=g.index)
        rows.append({**describe(g["config"].iloc[0]), "seeds": g["seed"].nunique(),
                     "final_mean": g["final_top1"].mean(), "final_std": g["final_top1"].std(),
                     "best_mean": g["best_top1"].mean(),
                     "val_mean": val.mean() if len(val) else np.nan,
                     "macs_ratio": macs.mean(), "macs_std": macs.std(),
                     "params_ratio": params.mean(), "params_std": params.std(),
                     "released": released.mean() if len(released) else np.nan,
                     "revisions": ", ".join(revisions(g)), "config_id": cid})
    return pd.DataFrame(rows)


def varying(table: pd.DataFrame, keep=("method", "target")) -> list[str]:
    """The knob columns of a summary that differ between its rows (plus ``keep``)."""
    knobs = [c for c in describe_columns() if c in table]
    return [c for c in knobs if c in keep or table[c].nunique(dropna=False) > 1]


def distinguishing(table: pd.DataFrame, keep=("method", "target")) -> list[str]:
    """The knob columns a reader needs to tell the rows of ``table`` apart (plus ``keep``): those
    whose set values differ between rows, and those set in one configuration of a method and
    left at its default in another (TPP × DPM's release rule). A knob that takes one value
    wherever it applies (N = 84 for SP and DPM) is said once instead (``common_knobs``)."""
    knobs = [c for c in describe_columns() if c in table]
    return [c for c in knobs if c in keep or table[c].dropna().nunique() > 1
            or table.groupby("method")[c].nunique(dropna=False).gt(1).any()]


def common_knobs(table: pd.DataFrame) -> dict:
    """The knobs left out by ``distinguishing``, each with its one value (where it applies)."""
    shown = distinguishing(table)
    return {c: table[c].dropna().iloc[0] for c in describe_columns()
            if c in table and c not in shown and table[c].notna().any()}


def by_target(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by method (in ``METHOD_STYLE``'s order), then by the kind of target and
    its number ("MACs 0.1" before "MACs 0.25" before "MACs 0.5", not as text)."""
    order = {m: i for i, m in enumerate(METHOD_STYLE)}
    target = table["target"].astype(str)
    number = pd.to_numeric(target.str.extract(r"(\d+(?:\.\d+)?)")[0], errors="coerce")
    method = table["method"] if "method" in table else pd.Series("", index=table.index)
    keys = pd.DataFrame({"m": method.map(order).fillna(len(order)),
                         "kind": target.str.replace(r"\d+(?:\.\d+)?", "#", regex=True),
                         "n": number}, index=table.index)
    return table.loc[keys.sort_values(["m", "kind", "n"], kind="stable").index]


def describe_columns() -> list[str]:
    return list(describe({"kind": "dense", "model": "", "data": {"dataset": "", "val_fraction": 0},
                          "train": {"epochs": 0}}))


# ---- one look for every figure ---------------------------------------------------------------
# One colour and marker per method, the same in every figure, from seaborn's colour-blind palette:
# a reader who learns that DPM is the blue circle in one figure reads every other one the same way.
# Variants of one method (OTOv2's DHSPG deviations, TPP × DPM's release rule) keep its colour and
# marker and differ in fill and line style (``series_styles``); iterative pruning, the baseline
# that removes in rounds, is also dashed.
_CB = sns.color_palette("colorblind")
METHOD_STYLE = {
    "dpm": {"color": _CB[0], "marker": "o", "ls": "-"},
    "sp": {"color": _CB[1], "marker": "s", "ls": "-"},
    "single-step": {"color": _CB[7], "marker": "^", "ls": "-"},
    "iterative": {"color": _CB[2], "marker": "D", "ls": "--"},
    "host": {"color": _CB[5], "marker": "v", "ls": "-"},
    "tpp": {"color": _CB[4], "marker": "P", "ls": "-"},
    "tpp+dpm": {"color": _CB[3], "marker": "X", "ls": "-"},
    "dense": {"color": "black", "marker": "*", "ls": ":"},
}
OTHER_STYLE = {"color": "dimgrey", "marker": ".", "ls": "-"}   # a method this table does not know
_FILLS = ("full", "none", "left", "bottom", "right", "top")
_DASHES = ("-", "--", ":", "-.")
METHOD_NAMES = {"single-step": "single-step", "sp": "SP", "dpm": "DPM", "iterative": "iterative",
                "tpp": "TPP", "tpp+dpm": "TPP × DPM", "host": "host alone", "dense": "dense"}
HOST_NAMES = {"depgraph": "DepGraph", "otov2": "OTOv2", "gatedecorator": "Gate Decorator"}
# knob values as a legend says them; other knobs read "<format> value" (KNOB_FORMATS)
KNOB_WORDS = {
    "lasso_while_decaying": {True: "lasso on while decaying", False: "lasso off while decaying"},
    "l_init_at": {"projection": "L_init at the projection test",
                  "trial": "L_init at the trial point"},
    "on_release": {"stay": "released stay in G_p", "leave": "released leave G_p",
                   "replace": "released replaced", None: "released not replaced (default)"},
    "sr_signal": {"gradient": "SR reads the loss gradient", "update": "SR reads DHSPG's step"},
    "gate_decay": {"gate": "gates decay", "gate+filter": "gates and filters decay"},
    "rule": {"all": "release when both signals pass", "any": "release when either passes"},
    "prune_schedule": {"linear": "linear removal rounds", "agp": "cubic (AGP) removal rounds"},
}
KNOB_FORMATS = {"criterion": "{} criterion", "N": "N = {}", "t_rate": "T_rate = {}",
                "t_len": "T_len = {}", "window": "window of {} steps", "k": "{} removal rounds",
                "rate_reference": "C_rate against the {}", "epochs": "{} epochs", "lr": "lr {}",
                "schedule": "{} schedule", "target": "{}", "label_smoothing": "label smoothing {}",
                "nesterov": "Nesterov {}", "val_fraction": "validation fraction {}"}


def method_style(method) -> dict:
    """``METHOD_STYLE`` of ``method`` (a copy; ``OTHER_STYLE`` for a method it does not list)."""
    return dict(METHOD_STYLE.get(method, OTHER_STYLE))


def series_styles(methods) -> list[dict]:
    """Per series (its method, in drawing order): the method's colour and marker; the second and
    later series of one method get the next marker fill and line style, so that variants stay
    apart without leaving their method's colour."""
    seen: dict = {}
    styles = []
    for m in methods:
        n = seen[m] = seen.get(m, -1) + 1
        style = method_style(m)
        if n:
            style.update(fillstyle=_FILLS[n % len(_FILLS)],
                         ls=_DASHES[(_DASHES.index(style["ls"]) + n) % len(_DASHES)])
        styles.append(style)
    return styles


def method_label(method, host=None) -> str:
    """A method in words; under a host, as the paper's tables name it ("OTOv2 + DPM")."""
    if host in HOST_NAMES:
        return HOST_NAMES[host] + ("" if method == "host"
                                   else f" + {METHOD_NAMES.get(method, method)}")
    return METHOD_NAMES.get(method, str(method))


def knob_label(knob: str, value) -> str:
    """One knob's value in words ("lasso off while decaying", "N = 84"); a missing value, where
    other configurations of the method set the knob, is its default (``KNOB_WORDS[knob][None]``
    where the default has words)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return KNOB_WORDS.get(knob, {}).get(None, f"{knob.replace('_', ' ')} at its default")
    words = KNOB_WORDS.get(knob, {})
    if isinstance(value, (bool, np.bool_, str)) and value in words:
        return words[value]
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return KNOB_FORMATS.get(knob, knob.replace("_", " ") + " {}").format(text)


def series_label(method, knobs: dict | None = None, host=None) -> str:
    """A series' legend entry: the method in words, then its knobs in words."""
    return ", ".join([method_label(method, host)]
                     + [knob_label(k, v) for k, v in (knobs or {}).items()])


MIN_MACS_SPAN = 0.1  # an axis of MACs kept spans at least this fraction of the dense model's


def macs_axis(ax, values, axis: str = "x", min_span: float = MIN_MACS_SPAN) -> float:
    """Limits of a MACs-kept axis at least ``min_span`` wide around ``values``, so that
    configurations that reach one target within 0.002 of each other sit together instead of
    across the whole axis. Returns the span drawn."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    if not len(v):
        return min_span
    lo, hi = v.min(), v.max()
    pad = max(min_span - (hi - lo), 0) / 2 + 0.05 * max(hi - lo, min_span)
    low = lo - pad
    if low <= 0 and getattr(ax, f"get_{axis}scale")() == "log":
        low = lo / 2
    getattr(ax, f"set_{axis}lim")(low, hi + pad)
    return hi + pad - low


def dodge(values, step: float) -> tuple[np.ndarray, str]:
    """Positions on a MACs axis for points closer than ``step`` to a neighbour (one target
    reached by several methods): spread ``step`` apart around their mean, in order of MACs, so
    that their intervals do not cover each other. Returns the positions and the note a figure
    that moved any point carries ("" when none moved)."""
    v = np.asarray(values, dtype=float)
    pos = v.copy()
    order = np.argsort(v, kind="stable")
    clusters = []
    for i in order:
        if clusters and v[i] - v[clusters[-1][-1]] < step:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    for c in (c for c in clusters if len(c) > 1):
        pos[c] = v[c].mean() + (np.arange(len(c)) - (len(c) - 1) / 2) * step
    moved = bool(np.any(np.abs(pos - v) > 1e-12))
    return pos, (f"points closer than {step:.3g} in MACs are drawn side by side, {step:.3g} "
                 "apart, around their mean MACs" if moved else "")


def method_knobs(table: pd.DataFrame, row) -> dict:
    """The knobs, other than the target, that tell ``row``'s configuration apart from the other
    configurations of its method in the summary ``table`` (OTOv2's DHSPG deviations, say)."""
    same = table[table["method"] == row["method"]]
    return {k: row[k] for k in varying(same, keep=()) if k != "target"}


def accuracy_vs_macs(records: pd.DataFrame, out=None, title: str = "", show: bool = False) -> Path:
    """Final top-1 (mean ± std over seeds) against the kept fraction of MACs (± std). One line per
    series of configurations that differ only in their target, in its method's colour and marker
    (``METHOD_STYLE``) and labelled in words by the knobs that tell it from its method's other
    series; the dense accuracy as a reference band. The MACs axis spans at least
    ``MIN_MACS_SPAN``, and points of one target are drawn side by side (``dodge``, said under the
    axes)."""
    s = summarize(records)
    knobs = [c for c in varying(s, keep=("method",)) if c != "target"]
    host = s["host"].iloc[0] if "host" in s else None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.set_xscale("log")
    macs_axis(ax, s["macs_ratio"])
    # side by side in log units: the axis is logarithmic
    pos, moved = dodge(np.log10(s["macs_ratio"]), 0.02 * np.log10(ax.get_xlim()[1] /
                                                                    ax.get_xlim()[0]))
    s = s.assign(x=10 ** pos)
    series = list(s.groupby(knobs, sort=False, dropna=False))
    styles = series_styles(d["method"].iloc[0] for _, d in series)
    for (_, d), style in zip(series, styles):
        d = d.sort_values("macs_ratio")
        ax.errorbar(d["x"], d["final_mean"], yerr=d["final_std"].fillna(0),
                    xerr=d["macs_std"].fillna(0), capsize=3, mec=style["color"],
                    label=series_label(d["method"].iloc[0], method_knobs(s, d.iloc[0]), host),
                    **style)
    dense = records.drop_duplicates("dense_run_id")["dense_top1"].dropna() \
        if "dense_run_id" in records else pd.Series(dtype=float)
    if len(dense):
        ax.axhspan(dense.mean() - dense.std(ddof=0), dense.mean() + dense.std(ddof=0),
                   color="grey", alpha=0.2, label=f"dense {dense.mean():.1f}%")
    ax.set(xlabel="MACs kept (fraction of dense)", ylabel="final top-1 (%)", title=title)
    ax.legend(fontsize=8)
    if moved:
        ax.text(0, -0.16, moved.replace(" in MACs", " in log10 MACs"), transform=ax.transAxes,
                fontsize=6, color="dimgrey", va="top")
    provenance_footnote(fig, records)
    path = _save(fig, "accuracy_vs_macs.png" if out is None else Path(out).name, out)
    if not show:
        plt.close(fig)
    return path


SR_KNOBS = ("target", "criterion", "t_rate", "t_len", "rule", "window", "rate_reference")


def self_rectifying_table(records: pd.DataFrame, metric: str = "final_val") -> pd.DataFrame:
    """One row per DPM configuration in ``records``: its selection criterion and Self-Rectifying
    knobs, the structures released (and kept at the end) and the release events per run (a
    released structure may be selected and released again), where the released and the finally
    pruned structures stood in the
    dense model's L2 ranking (mean percentile, 100 = largest norm), and ``metric`` paired with SP
    under the same criterion, seeds and dense model: DPM − SP with its 95 % interval over seeds,
    its p-value and, the table's rows being one family, Holm's adjustment (``stats.adjust``: ``m``,
    ``p_holm``, the adjusted interval, ``claim``).
    This is the ablation and mis-selection table: does SR release what the criterion got wrong,
    and does releasing it pay?"""
    from .stats import adjust, paired_differences

    dpm, sp = records[records["method"] == "dpm"], records[records["method"] == "sp"]
    rows = []
    for cid, g in dpm.groupby("config_id", sort=False):
        knobs = describe(g["config"].iloc[0])
        pct = pd.DataFrame(list(g["importance_percentiles"].dropna())) \
            if "importance_percentiles" in g else pd.DataFrame()
        row = {**{k: knobs[k] for k in SR_KNOBS},
               **{k: knobs[k] for k in describe_columns() if k not in SR_KNOBS},
               "seeds": g["seed"].nunique(),
               "dpm": g[metric].mean(), "released": g["released"].mean(),
               "release_events": g["releases"].map(len).mean() if "releases" in g else np.nan,
               "released_pct": pct["released"].mean() if "released" in pct else np.nan,
               "pruned_pct": pct["pruned"].mean() if "pruned" in pct else np.nan}
        pair = paired_differences(pd.concat([g, sp]), "dpm", "sp", metric)
        if not pair.empty:
            p = pair.iloc[0]
            row.update(sp=p["sp"], paired_seeds=p["seeds"], diff=p["diff"],
                       diff_std=p["diff_std"], ci95_low=p["ci95_low"], ci95_high=p["ci95_high"],
                       p=p["p"])
        rows.append({**row, "revisions": ", ".join(revisions(g)), "config_id": cid})
    table = pd.DataFrame(rows)
    # knobs beyond SR's only where the DPM configurations differ in them (OTOv2's variants)
    table = table.drop(columns=[k for k in describe_columns() if k not in SR_KNOBS and k in table
                                and table[k].nunique(dropna=False) < 2])
    if "p" not in table:  # no DPM setting has SP runs to pair with
        return table
    return adjust(table.assign(seeds=table["paired_seeds"])).assign(seeds=table["seeds"])


def sr_signal_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per DPM run that recorded its signals (``sr_signals``): criterion and
    Self-Rectifying knobs, then the quantiles of the raw C_rate of decaying and of never-selected
    structures. A C_rate that carries information separates the two."""
    rows = []
    for _, r in records.iterrows():
        sig = r.get("sr_signals")
        if not isinstance(sig, dict) or not sig:  # SP records have none
            continue
        knobs = describe(r["config"])
        rows.append({**{k: knobs[k] for k in SR_KNOBS}, "seed": r["seed"],
                     **{f"{who} q{round(q * 100)}": v for who in ("decaying", "never_selected")
                        for q, v in zip(sig["quantiles"],
                                        sig[who]["c_rate"] or [np.nan] * len(sig["quantiles"]))}})
    return pd.DataFrame(rows)


def early_training(records: pd.DataFrame, epoch: int = 1) -> pd.DataFrame:
    """Per configuration (method, target, what happens to released structures), mean ± std over
    seeds of the training loss and test top-1 after the first ``epoch`` epochs of the recorded
    training phase: a trainability signal read from records (TPP's claim is that its network
    trains faster right after pruning than L1 one-shot's)."""
    rows = []
    for _, g in records.groupby("config_id", sort=False):
        knobs = describe(g["config"].iloc[0])
        at = g["history"].map(lambda h: h[epoch - 1] if len(h) >= epoch else None).dropna()
        loss = at.map(lambda e: e["train_loss"])
        acc = at.map(lambda e: e["test_acc"])
        rows.append({"method": knobs["method"], "target": knobs["target"],
                     "on_release": knobs["on_release"] or "-", "seeds": len(at),
                     f"train loss, epoch {epoch}": f"{loss.mean():.3f} ± {loss.std():.3f}",
                     f"test top-1 after epoch {epoch}": f"{acc.mean():.2f} ± {acc.std():.2f}"})
    return pd.DataFrame(rows).set_index(["method", "target", "on_release"])


def provenance_notes(records: pd.DataFrame) -> list[str]:
    """Lines saying that ``records`` come from more than one combination of code revision, CPU
    model, torch thread count and training-path version (``results.provenance``), one line per
    combination; none when they share one. The same configuration need not compute the same
    numbers across them (dense run a30c3bafa5b6: 77.48 % with 2 threads, 76.40 % with 1)."""
    from ..experiments.results import provenance

    combos = provenance(records)
    if len(combos) < 2:
        return []
    return ([f"pools or pairs runs from {len(combos)} combinations of code revision, CPU model, "
             "torch threads and training path:"]
            + [f"  {c.git}, CPU {c.cpu}, {c.threads} threads, training path {c.training_path}: "
               f"{c.runs} runs" for c in combos.itertuples()])


def provenance_footnote(fig, records: pd.DataFrame) -> None:
    """``provenance_notes`` as a footnote under everything drawn on ``fig`` so far (legends
    below the axes included; ``bbox_inches="tight"`` keeps it). Call it last, before saving."""
    notes = provenance_notes(records)
    if notes:
        bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
        fig.text(0.01, bottom - 0.02, "\n".join(n.strip() for n in notes), ha="left",
                 va="top", fontsize=6, color="dimgrey")


def _revision_notes(records: pd.DataFrame) -> list[str]:
    notes, revs = provenance_notes(records), revisions(records)
    if any(r.endswith("-dirty") for r in revs):
        notes.append("some records were made with uncommitted changes (-dirty)")
    return notes


def _data_labels(records: pd.DataFrame) -> str:
    """The datasets of ``records`` as tables and figures name them (``data.dataset_label``)."""
    return ", ".join(dataset_label(d) for d in records["dataset"].unique())


class Comparison(NamedTuple):
    """What ``report`` finds in one results folder (``dense`` or a host's)."""
    name: str
    table: pd.DataFrame              # summarize(): one row per configuration
    figure: Path | None              # accuracy vs MACs
    notes: list[str]
    pairs: pd.DataFrame              # paired differences over seeds
    self_rectifying: pd.DataFrame    # one row per DPM configuration, paired with SP


def report(profile: str = "mini", results_dir=None, out_dir=None) -> list[Comparison]:
    """Every comparison recorded for ``profile`` under ``results_dir`` (default
    ``$DPM_LAB_HOME/results``): one per host folder (``core``, ``depgraph``, ``otov2``,
    ``gatedecorator``).
    Returns one ``Comparison`` per folder: the notes say when the records come from more than
    one combination of revision, CPU model, threads and training path (``provenance_notes``) or
    from uncommitted code; the paired differences (``stats.compare``) compare
    each method with the baselines run for run over seeds, Holm-adjusted over the folder's table
    (its family size in column ``m``); ``self_rectifying`` is ``self_rectifying_table`` on
    validation top-1 where every run held a split out (else test)."""
    from ..training.paths import results_dir as default_results
    from ..experiments.results import load_records
    from ..hosts import HOSTS

    base = Path(results_dir or default_results()) / profile
    out_dir = Path(out_dir) if out_dir else figures_dir()
    found = []
    dense = load_records(base / "dense")
    if not dense.empty:  # the dense models every comparison starts from (and recipe searches)
        table = summarize(dense)
        cols = varying(table, keep=("model",)) + ["seeds", "final_mean", "final_std", "best_mean",
                                                  "val_mean", "revisions"]
        found.append(Comparison("dense", table[cols], None,
                                _revision_notes(dense) + [f"data: {_data_labels(dense)}"],
                                pd.DataFrame(), pd.DataFrame()))
    for host in HOSTS:
        records = load_records(base / host)
        if records.empty:
            continue
        title = {"core": "core methods", "depgraph": "DepGraph host", "otov2": "OTOv2 host",
                 "gatedecorator": "Gate Decorator host"}[host] + \
            f", {profile} profile, {_data_labels(records)}"
        path = accuracy_vs_macs(records, out=out_dir / f"accuracy_vs_macs_{host}_{profile}.png",
                                title=title)
        table = by_target(summarize(records))
        notes = _revision_notes(records) + [f"data: {_data_labels(records)}"]
        notes.append("common to all rows (where they apply): " + ", ".join(
            f"{k}={int(v) if isinstance(v, float) and v.is_integer() else v}"
            for k, v in common_knobs(table).items()))
        cols = distinguishing(table) + ["seeds", "final_mean", "final_std", "best_mean",
                                        "val_mean", "macs_ratio", "params_ratio", "released",
                                        "revisions"]
        pairs = method_pairs(records, host)
        found.append(Comparison(host, table[cols], path, notes, pairs,
                                self_rectifying_table(records, final_metric(records))))
    return found


PAIR_COLUMNS = ["comparison", "target", "seeds", "diff", "ci95_low", "ci95_high", "p", "p_holm",
                "holm_low", "holm_high", "claim"]


def recorded_pairs(profile: str, contains: str, results_dir=None, out_dir=None,
                   host: str = "core") -> tuple[Path, pd.DataFrame, str]:
    """A notebook's view of one question in ``report``'s table: the accuracy-vs-MACs figure of
    ``host``, the paired rows whose comparison names ``contains`` (``PAIR_COLUMNS``; the Holm
    family stays the whole table) and one line saying which targets and how many seeds per pair
    are recorded, the family size and which of these rows are claimed. A sweep still running
    across sessions has fewer seeds at some targets; the line says so instead of hiding it."""
    found = {c.name: c for c in report(profile, results_dir, out_dir)}
    if host not in found:
        raise DpmLabError(f"no {host!r} records of profile {profile!r} under "
                          f"{results_dir or 'the results folder'}; found: "
                          f"{sorted(found) or 'none'}")
    comparison = found[host]
    pairs = comparison.pairs
    names = sorted(set(pairs["comparison"])) if not pairs.empty else []
    rows = pairs[pairs["comparison"].str.contains(contains, regex=False)] if names else pairs
    if rows.empty:
        raise DpmLabError(f"no paired comparison names {contains!r} in the {host!r} records of "
                          f"profile {profile!r}; there are: {names or 'none'}")
    claimed = [f"{r.comparison} at {r.target}" for r in rows.itertuples() if r.claim]
    summary = (f"{profile} profile, {host}: targets {', '.join(sorted(rows['target'].unique()))}; "
               f"seeds per pair {', '.join(str(s) for s in sorted(set(rows['seeds'])))}; "
               f"Holm family m = {pairs['m'].iloc[0]}; claimed among the rows naming "
               f"{contains!r}: {', '.join(claimed) or 'none'}")
    return comparison.figure, rows[PAIR_COLUMNS].reset_index(drop=True), summary


def method_pairs(records: pd.DataFrame, host: str) -> pd.DataFrame:
    """The paired differences of final top-1 that ``report`` prints for one host folder, one
    Holm family (``stats.compare``): DPM and SP against the baseline (single-step in core, the
    host method elsewhere) and DPM against SP; in core also iterative pruning against
    single-step, and SP and DPM against iterative. Each side carries the knobs that tell apart
    compared configurations of one method at one target (OTOv2's variants, iterative's
    schedules) as ``<knob>_a`` and ``<knob>_b``."""
    from .stats import PAIR_KEYS, compare

    table = summarize(records)
    baseline = "single-step" if host == "core" else "host"
    methods = {"dpm", "sp", baseline}
    # core: iterative pruning against single-step, and SP and DPM against it (issue 28)
    against = ((("iterative", baseline), ("sp", "iterative"), ("dpm", "iterative"))
               if host == "core" else ())
    compared = table[table["method"].isin(methods | {m for pair in against for m in pair})]
    knobs = tuple(k for k in varying(table) if k not in PAIR_KEYS and k != "method" and
                  compared.groupby(["method", "target"])[k].nunique(dropna=False).gt(1).any())
    return compare(records, (("dpm", baseline), ("dpm", "sp"), ("sp", baseline)) + against,
                   knobs=knobs)


def final_metric(records: pd.DataFrame) -> str:
    """``final_val`` where every record held out a validation split, else ``final_top1``: the
    column that chooses settings, never the test split when a validation split exists."""
    held_out = "final_val" in records and records["final_val"].notna().all()
    return "final_val" if held_out else "final_top1"


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
    """One row per dependency group of a ``ChannelGroups``: root layer, channels, structures
    (fewer than channels where a member splits them into ``blocks``: grouped convs, attention
    heads), what a structure is (``unit``: a channel, or a whole attention head), first global
    structure id, whether removing zeroed structures is ``exact`` (no LayerNorm or attention
    mixes the channels), and the coupled layers a structure spans."""
    return pd.DataFrame([{"root": g.root, "channels": g.channels, "structures": g.size,
                          "blocks": g.ch_groups, "unit": g.unit, "exact": g.exact,
                          "first_id": g.offset,
                          "coupled_layers": len(g.members), "members": ", ".join(g.members)}
                         for g in groups.groups])


def importance_table(groups, criteria=("l2", "l1", "bn", "random")) -> pd.DataFrame:
    """Every structure's score under each importance criterion (higher = more important), with its
    group's root layer and channel index. Gradient criteria (``taylor``) need ``.grad`` first."""
    from ..pruning import make_importance

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
    norm is within half a decay step of (N − 1)/N · L_init; exact with the default producer
    scope, see ``pruning.decay``). Left: ``k`` of them in absolute units, each with its schedule
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
    the epochs during which structures were decaying are shaded; where it carries removal rounds
    (``iterative``), each round is a dotted line in the run's colour.
    """
    records = records.to_dict("records") if isinstance(records, pd.DataFrame) else list(records)
    if not records:
        raise ValueError("no records to plot")
    start = start or {}
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    styles = series_styles(r.get("method", r["kind"]) for r in records)
    for r, style in zip(records, styles):
        h = pd.DataFrame(r["history"])
        x, y = h["epoch"].tolist(), h["test_acc"].tolist()
        if r.get("method") in start:
            x, y = [0] + x, [start[r["method"]]] + y
        color = style["color"]
        ax.plot(x, y, ms=3, **style,
                label=f"{method_label(r.get('method', r['kind']))} "
                      f"(final {h['test_acc'].iloc[-1]:.1f}%)")
        decay = r.get("decay")
        if decay and decay.get("rounds"):
            spe = h["step"].iloc[0] / h["epoch"].iloc[0]
            first = decay["rounds"][0]["step"] / spe
            last = (decay["rounds"][-1]["step"] + decay["decay_steps"]) / spe
            ax.axvspan(first, last, color=color, alpha=0.08)
        for removal in r.get("prune_rounds") or []:
            spe = h["step"].iloc[0] / h["epoch"].iloc[0]
            ax.axvline(removal["step"] / spe, color=color, ls=":", lw=1)
    dense = records[0].get("dense_top1")
    if dense is not None:
        ax.axhline(dense, color="k", ls=":", lw=1, label=f"dense {dense:.1f}%")
    ax.set(xlabel="fine-tuning epoch", ylabel="test top-1 (%)",
           title="accuracy through pruning (shaded: structures decaying"
                 + ("; dotted: removal rounds)" if any(r.get("prune_rounds") for r in records)
                    else ")"))
    ax.legend(fontsize=8)
    return _finish(fig, out, show)


def sparsity_curves(records, out=None, show: bool = True):
    """Group sparsity (fraction of zero groups) and test top-1 per epoch, one line per record
    (OTOv2 runs log ``group_sparsity`` in their history)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for r, style in zip(records, series_styles(r.get("method") for r in records)):
        h = pd.DataFrame(r["history"])
        label = f"{method_label(r.get('method'))}, seed {r.get('seed')}"
        style = {"color": style["color"], "ls": "-" if style["ls"] == ":" else style["ls"]}
        a.plot(h["epoch"], h["group_sparsity"], label=label, **style)
        if "committed" in h:
            a.plot(h["epoch"], h["committed"], ls=":", color=style["color"])
        b.plot(h["epoch"], h["test_acc"], label=label, **style)
    if records and "target_sparsity" in records[0]:
        a.axhline(records[0]["target_sparsity"], color="grey", ls="--", lw=1, label="target")
    a.set(xlabel="epoch", ylabel="group sparsity (dotted: committed)")
    b.set(xlabel="epoch", ylabel="test top-1 (%)")
    a.legend(fontsize=7)
    fig.tight_layout()
    return _finish(fig, out, show)


def layer_widths(models: dict, out=None, show: bool = True, ax=None, methods: dict | None = None):
    """Output channels of every convolution, one line per entry of ``{label: model or widths}``
    (a list of channel counts in network order, e.g. from :func:`mean_widths`): where each method
    took its channels from. Each line takes the colour of its method (``methods``: ``{label:
    method}``; default: the label itself, so ``mean_widths``'s ``{"dense": ..., "sp": ...}`` is
    styled as it is). With ``ax``, draws there and returns it (for composed figures)."""
    from ..training.metrics import conv_widths

    fig, axis = plt.subplots(figsize=(9, 3.2)) if ax is None else (None, ax)
    methods = methods or {}
    styles = series_styles(methods.get(label, label) for label in models)
    widths = {label: list(model) if isinstance(model, (list, tuple, np.ndarray))
              else conv_widths(model) for label, model in models.items()}
    labels = list(widths)
    for i, ((label, w), style) in enumerate(zip(widths.items(), styles)):
        # a line that a later one covers exactly says so: it cannot be seen
        cover = next((other for other in labels[i + 1:] if len(widths[other]) == len(w)
                      and np.allclose(widths[other], w)), None)
        text = label if cover is None else f"{label} (same widths as {cover}, under it)"
        axis.plot(range(len(w)), w, label=text, ms=4, mec=style["color"], **style)
    axis.set(xlabel="convolution (network order)", ylabel="output channels")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.2))  # below: lines stay seen
    return axis if fig is None else _finish(fig, out, show)


def mean_widths(records: pd.DataFrame, by: str = "method") -> dict:
    """``{value of by: mean conv widths over its records}``, with ``"dense"`` first, from records
    that kept their widths (``widths``, ``dense_widths``; records written before they did are
    skipped)."""
    if "widths" not in records:
        return {}
    kept = records[records["widths"].map(lambda w: isinstance(w, list))]
    if kept.empty:
        return {}
    out = {"dense": list(np.mean(kept["dense_widths"].tolist(), axis=0))}
    for key, rows in kept.groupby(by, sort=False):
        out[key] = list(np.mean(rows["widths"].tolist(), axis=0))
    return out


def gram_heatmaps(weights: dict, pruned: torch.Tensor, out=None, show: bool = True):
    """|G| = |W Wᵀ| of one layer's filters, side by side for each ``{label: weight}``, filters
    ordered pruned first (``pruned``: bool per filter) and cut by a line: TPP's regulariser
    empties the pruned rows and columns and leaves the kept block alone."""
    order = torch.cat([pruned.nonzero().flatten(), (~pruned).nonzero().flatten()]).cpu()
    k = int(pruned.sum())
    fig, axes = plt.subplots(1, len(weights), figsize=(3.6 * len(weights), 3.2), squeeze=False)
    for ax, (label, w) in zip(axes[0], weights.items()):
        W = w.detach().flatten(1).double().cpu()[order]
        G = (W @ W.T).abs().numpy()
        sns.heatmap(G, ax=ax, cmap="viridis", square=True, xticklabels=False, yticklabels=False,
                    cbar_kws={"label": "|G|"})
        ax.axhline(k, color="w", lw=0.8)
        ax.axvline(k, color="w", lw=0.8)
        ax.set(title=label, xlabel=f"filter ({k} pruned first)", ylabel="filter")
    fig.tight_layout()
    return _finish(fig, out, show)


def gate_scores(groups, scores: torch.Tensor, picked: torch.Tensor | None = None, out=None,
                show: bool = True):
    """Gate Decorator's Taylor scores |φ·∂L/∂φ| of every structure, one column per dependency
    group (root layer), log scale; ``picked`` (bool ``[S]``) marks what the tick prunes. The
    ranking is global: a layer whose scores sit low loses most channels."""
    roots = [g.root for g in groups.groups]
    frame = pd.DataFrame({"layer": [roots[int(i)] for i in groups.group_of.cpu()],
                          "score": scores.detach().double().cpu().clamp_min(1e-12).numpy()})
    frame["picked"] = False if picked is None else picked.cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(roots)), 3.6))
    sns.stripplot(frame, x="layer", y="score", hue="picked", palette={False: "C0", True: "C3"},
                  size=3, jitter=0.25, ax=ax, log_scale=True)
    ax.tick_params(axis="x", rotation=90)
    ax.set(xlabel="dependency group (root layer)", ylabel="Taylor score |φ·∂L/∂φ|",
           title="gate scores after one tick (red: pruned by the global ranking)")
    fig.tight_layout()
    return _finish(fig, out, show)


def ticktock_trajectories(logs: dict, target: float | None = None, out=None, show: bool = True,
                          methods: dict | None = None):
    """Tick-Tock runs side by side (``{label: TickTock.log}``): the MACs kept once each tick's
    pick is removed, and the test accuracy after each tick, against the optimiser step; tocks
    are marked. The host and DPM pick at the same ticks; they differ in what the picked channels
    do next (masked at once, or decaying over N steps). ``methods`` (``{label: method}``) gives
    each line its method's colour; without it, the lines take the palette's colours in turn."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = (series_styles(methods.get(label, label) for label in logs) if methods else
              [{"color": _CB[j % len(_CB)], "ls": "-"} for j in range(len(logs))])
    for (label, log), style in zip(logs.items(), styles):
        frame = pd.DataFrame(log)
        line = {"marker": ".", "color": style["color"], "ls": style["ls"]}
        a.plot(frame["step"], frame["macs_ratio"], label=label, **line)
        b.plot(frame["step"], frame["test_acc"], label=label, **line)
        tocks = frame[frame["tock"]]
        b.scatter(tocks["step"], tocks["test_acc"], marker="^", color=style["color"], s=40)
    if target is not None:
        a.axhline(target, color="k", ls=":", lw=1, label="target")
    a.set(xlabel="optimiser step", ylabel="MACs kept (fraction of dense)",
          title="MACs after each tick's pick")
    b.set(xlabel="optimiser step", ylabel="test top-1 (%)", title="accuracy after each tick (▲: a tock follows)")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, out, show)

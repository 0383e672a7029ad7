"""Paired comparisons over seeds: the intervals a claim may rest on.

Two methods are compared run for run: a pair is two records with the same seed and the same
dense checkpoint (``dense_run_id``) whose configurations agree on everything but the method's
own options (host, model, data, target, criterion, training recipe). The difference of their
final top-1 is averaged over seeds with a Student-t 95 % interval; a difference is claimed only
when the interval excludes zero. With the CIFAR-10 slice's 1017 test images one run carries about
±1.4 points of sampling error; pairing by seed removes what the two runs share (the dense model,
the data order), not the test set's sampling error.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st

from .runspec import describe

PAIR_KEYS = ("host", "model", "dataset", "target", "criterion", "epochs", "schedule", "lr",
             "nesterov", "label_smoothing", "val_fraction")


def interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its Student-t interval."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan, math.nan, math.nan)
    half = _st.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def _key(config: dict) -> tuple:
    d = describe(config)
    return tuple(d[k] for k in PAIR_KEYS)


def paired_differences(records: pd.DataFrame, a: str, b: str, metric: str = "final_top1",
                       knobs: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per pair of configurations (method ``a`` vs method ``b``) that agree on
    ``PAIR_KEYS``: seeds paired, both means, the mean difference a − b, its standard deviation
    and its 95 % interval, and whether the interval excludes zero. ``knobs``: ``describe``
    columns outside ``PAIR_KEYS`` to show for each side (``<knob>_a``, ``<knob>_b``), which tell
    apart several configurations of one method (e.g. TPP x DPM's ``on_release``)."""
    rows = []
    if records.empty:
        return pd.DataFrame(rows)
    A, B = records[records["method"] == a], records[records["method"] == b]
    for _, ga in A.groupby("config_id", sort=False):
        for _, gb in B.groupby("config_id", sort=False):
            if _key(ga["config"].iloc[0]) != _key(gb["config"].iloc[0]):
                continue
            m = ga.merge(gb, on=["seed", "dense_run_id"], suffixes=("_a", "_b"))
            if m.empty:
                continue
            diff = m[f"{metric}_a"] - m[f"{metric}_b"]
            mean, lo, hi = interval(diff)
            rows.append({**dict(zip(PAIR_KEYS, _key(ga["config"].iloc[0]))),
                         "comparison": f"{a} - {b}", "seeds": len(m),
                         f"{a}": m[f"{metric}_a"].mean(), f"{b}": m[f"{metric}_b"].mean(),
                         "diff": mean, "diff_std": diff.std(ddof=1) if len(m) > 1 else math.nan,
                         "ci95_low": lo, "ci95_high": hi,
                         "claim": bool(lo > 0 or hi < 0) if len(m) > 1 else False,
                         **{f"{k}_{side}": describe(g["config"].iloc[0])[k] for k in knobs
                            for side, g in (("a", ga), ("b", gb))},
                         "config_id_a": ga["config_id"].iloc[0],
                         "config_id_b": gb["config_id"].iloc[0]})
    return pd.DataFrame(rows)

"""Paired comparisons over seeds: the intervals a claim may rest on, adjusted for multiplicity.

Two methods are compared run for run: a pair is two records with the same seed and the same
dense checkpoint (``dense_run_id``) whose configurations agree on everything but the method's
own options (host, model, data, target, criterion, training recipe). The difference of their
final top-1 is averaged over seeds with a Student-t 95 % interval and a paired t-test p-value.
With the CIFAR-10 slice's 1017 test images one run carries about ±1.4 points of sampling error;
pairing by seed removes what the two runs share (the dense model, the data order), not the test
set's sampling error.

A table makes many comparisons at once (the core table: three pairs of methods at three targets),
and at 95 % one in twenty null comparisons excludes zero by chance. So every table is one family
and is adjusted as a whole by Holm's step-down procedure (``holm``): ``m`` is the number of
distinct comparisons in the table, ``p_holm`` the Holm-adjusted p-value, and a difference is
claimed exactly when ``p_holm < ALPHA``. Beside the unadjusted 95 % interval (``ci95_*``) each
row carries a Holm-adjusted interval (``holm_*``, at confidence ``holm_conf``): the t-interval at
the level of the Holm threshold that judged the comparison, 1 − α/(m − k + 1) for the k-th
smallest p-value while the step-down rejects, and the level of the step where it stopped for
every comparison from there on. This interval, rather than Bonferroni's simultaneous one at
1 − α/m, is chosen because it is the one that agrees with the test: it excludes zero exactly when
the comparison is claimed (Bonferroni's interval can hold zero where Holm rejects). It is not a
simultaneous confidence set; Bonferroni's, at least as wide, would be.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as _st

from ..experiments.runspec import describe

PAIR_KEYS = ("host", "model", "dataset", "target", "criterion", "epochs", "schedule", "lr",
             "nesterov", "label_smoothing", "val_fraction")
# knobs that only some methods have: Smooth Pruning's N, which SP, DPM and iterative pruning's
# rounds share and single-step lacks. Two configurations that both have one must agree on it (SP
# at N = 780 is DPM at N = 780's baseline, not DPM at N = 390's); one that lacks it pairs with all
SHARED_KEYS = ("N",)
ALPHA = 0.05  # the family-wise error rate a claim is held to


def interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its Student-t interval."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan, math.nan, math.nan)
    half = _st.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def t_test(values) -> float:
    """Two-sided p-value of the one-sample t-test of mean zero (the paired t-test when ``values``
    are differences). NaN below two values. Differences that are all equal have no spread: p is
    1 when they are all zero (the same run twice) and 0 otherwise, as their zero-width interval
    says."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return math.nan
    sd = v.std(ddof=1)
    if sd == 0:
        return 1.0 if v.mean() == 0 else 0.0
    return float(2 * _st.t.sf(abs(v.mean()) / (sd / math.sqrt(len(v))), len(v) - 1))


def holm(pvalues, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjustment of one family of p-values. Returns the adjusted p-values
    (``min(1, max over j <= k of (m - j + 1) p_(j))`` for the k-th smallest of the m finite ones)
    and, per p-value, the test level that judged it: α/(m − k + 1) while the step-down rejects,
    the level of the step where it stopped for all the rest. Tied p-values share the level of the
    first of them, so the order of rows never matters. NaN p-values (a comparison without two
    seeds) are not in the family and stay NaN."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}: must lie strictly between 0 and 1")
    p = np.asarray(pvalues, dtype=float)
    adjusted, level = np.full(p.shape, np.nan), np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return adjusted, level
    order = finite[np.argsort(p[finite], kind="stable")]
    ps = p[order]
    steps = m - np.arange(m)                       # m - k + 1 for ranks k = 1..m
    adj = np.maximum.accumulate(np.minimum(1.0, steps * ps))
    first = np.searchsorted(ps, ps, side="left")   # the first rank of each tie
    rejected = adj < alpha
    stop = int(np.argmin(rejected)) if not rejected.all() else m
    lev = np.where(rejected, alpha / steps[first], alpha / steps[min(stop, m - 1)])
    adjusted[order], level[order] = adj, lev
    return adjusted, level


def adjust(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """``table`` (rows with ``seeds``, ``diff``, ``diff_std`` and ``p``, e.g. from
    ``paired_differences``) adjusted by Holm as one family: ``m`` (the family size, the same in
    every row), ``p_holm``, the Holm-adjusted interval ``holm_low``/``holm_high`` at confidence
    ``holm_conf`` and ``claim`` (``p_holm < alpha``), replacing any earlier adjustment. A
    comparison that appears in several rows (the same ``config_id_a``/``config_id_b``, e.g. the
    default setting in every panel of an ablation) counts once."""
    if table.empty:
        return table
    t = table.copy()
    keys = [c for c in ("config_id_a", "config_id_b") if c in t]
    # comparisons numbered in order of first appearance; each one's first row carries its p
    ids = (t.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() if keys
           else np.arange(len(t)))
    first = np.unique(ids, return_index=True)[1]
    p = t["p"].to_numpy(dtype=float)[first]
    adj, level = holm(p, alpha)
    adj, level = adj[ids], level[ids]
    n = t["seeds"].to_numpy(dtype=float)
    q = _st.t.ppf(1 - level / 2, np.maximum(n - 1, 1))   # NaN where the level is
    half = np.where(n > 1, q * t["diff_std"].to_numpy(dtype=float) / np.sqrt(n), np.nan)
    t["m"] = int(np.isfinite(p).sum())
    t["p_holm"] = adj
    t["holm_conf"] = 1 - level
    t["holm_low"], t["holm_high"] = t["diff"] - half, t["diff"] + half
    t["claim"] = adj < alpha
    return t


def _key(config: dict) -> tuple:
    d = describe(config)
    return tuple(d[k] for k in PAIR_KEYS)


def _comparable(a: dict, b: dict) -> bool:
    """Whether configurations ``a`` and ``b`` may be paired: equal ``PAIR_KEYS``, and equal
    ``SHARED_KEYS`` where both have them."""
    da, db = describe(a), describe(b)
    return (all(da[k] == db[k] for k in PAIR_KEYS) and
            all(da[k] is None or db[k] is None or da[k] == db[k] for k in SHARED_KEYS))


def paired_differences(records: pd.DataFrame, a: str, b: str, metric: str = "final_top1",
                       knobs: tuple[str, ...] = (), alpha: float = ALPHA) -> pd.DataFrame:
    """One row per pair of configurations (method ``a`` vs method ``b``) that agree on
    ``PAIR_KEYS`` (and ``SHARED_KEYS`` where both have them): seeds paired, both means, the mean difference a − b, its standard deviation,
    its 95 % interval and paired t-test p-value, adjusted by Holm over the rows returned
    (``adjust``; use ``compare`` for a table of several method pairs, which is one family).
    ``knobs``: ``describe`` columns outside ``PAIR_KEYS`` to show for each side (``<knob>_a``,
    ``<knob>_b``), which tell apart several configurations of one method (e.g. TPP x DPM's
    ``on_release``)."""
    rows = []
    if records.empty:
        return pd.DataFrame(rows)
    A, B = records[records["method"] == a], records[records["method"] == b]
    for _, ga in A.groupby("config_id", sort=False):
        for _, gb in B.groupby("config_id", sort=False):
            if not _comparable(ga["config"].iloc[0], gb["config"].iloc[0]):
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
                         "ci95_low": lo, "ci95_high": hi, "p": t_test(diff),
                         **{f"{k}_{side}": describe(g["config"].iloc[0])[k] for k in knobs
                            for side, g in (("a", ga), ("b", gb))},
                         "config_id_a": ga["config_id"].iloc[0],
                         "config_id_b": gb["config_id"].iloc[0]})
    return adjust(pd.DataFrame(rows), alpha)


def compare(records: pd.DataFrame, pairs, metric: str = "final_top1", knobs: tuple[str, ...] = (),
            alpha: float = ALPHA) -> pd.DataFrame:
    """The table of ``paired_differences`` for every method pair ``(a, b)`` in ``pairs``,
    adjusted by Holm as one family: what ``report`` prints per host and the notebooks show."""
    parts = [paired_differences(records, a, b, metric, knobs, alpha) for a, b in pairs]
    parts = [p for p in parts if not p.empty]
    return adjust(pd.concat(parts, ignore_index=True), alpha) if parts else pd.DataFrame()

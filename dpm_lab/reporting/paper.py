"""The papers' published numbers, read from one file so that none is ever typed in twice.

Every number of the DPM and TPP result tables the project compares against (sections 4.1–4.4 and 5.5
of its research notes; ``data/README.md`` says what each holds) lives in ``data/paper_results.csv``
of the repository, one row per number, with where it comes from (``source``, ``evidence``: the
file's labels, e.g. ``P`` read in the authors' README, ``SEED`` from the seed summary only) and
where it stands (``section``, ``table``, ``row``, ``column``). Notebooks and figures that put our
runs beside the papers read the papers' side from here: a number copied by hand into a notebook
cannot be traced, and drifts when the table is corrected.

    >>> from dpm_lab.reporting.paper import load_paper_results
    >>> otov2 = load_paper_results(framework="OTOv2", metric="top1")  # doctest: +SKIP

``value`` is a plain number in ``unit``; the meaning of each ``metric`` is in ``METRICS``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..training import paths

FILE_NAME = "paper_results.csv"
COLUMNS = ("source", "evidence", "section", "table", "framework", "method", "model", "dataset",
           "metric", "value", "unit", "row", "column", "note")
METRICS = {
    "top1": "top-1 accuracy, percent",
    "top1_unpruned": "top-1 of the unpruned model the row started from, percent",
    "top1_change": "change in top-1 against the host method, as printed, percentage points",
    "top1_drop": "unpruned minus pruned top-1, as printed (negative: pruned is better), points",
    "flops_remaining": "FLOPs left, percent of the unpruned model's",
    "flops_remaining_change": "change in flops_remaining against the host method, as printed",
    "params_remaining": "parameters left, percent of the unpruned model's",
    "params_remaining_change": "change in params_remaining against the host method, as printed",
    "sparsity": "sparsity as printed in TPP's table, percent",
    "speedup": "speed-up (unpruned FLOPs over pruned FLOPs), x",
    "flops": "FLOPs of the model, absolute (unit G)",
    "params": "parameters of the model, absolute (unit M)",
}
UNITS = ("percent", "points", "x", "G", "M")
SECTIONS = ("4.1", "4.2", "4.3", "4.4", "5.5")
# primary source, official code, secondary summary, seed summary only, our inference
EVIDENCE = ("P", "C", "S", "SEED", "I")
CHECKED_VOCABULARY = {"section": SECTIONS, "evidence": EVIDENCE, "metric": tuple(METRICS),
                      "unit": UNITS}


def paper_results_path() -> Path:
    """``data/paper_results.csv`` of the repository (see :func:`dpm_lab.training.paths.repository_file`)."""
    return paths.repository_file(f"data/{FILE_NAME}")


def _describe(table, index: int) -> str:
    """Where a row stands, for error messages: its line in the file and its table cell."""
    row = table.loc[index]
    return (f"line {index + 2} (section {row['section']}, row {row['row']!r}, "
            f"column {row['column']!r})")


def _validate(table, path: Path) -> None:
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; "
                         f"the columns are: {', '.join(COLUMNS)}")
    for index, text in table["value"].items():
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"{path}, {_describe(table, index)}: value {text!r} is not a finite "
                             "plain number; allowed: digits with an optional sign and decimal "
                             "point, percentages in percent without '%' (e.g. 93.30)")
    for column, allowed in CHECKED_VOCABULARY.items():
        for index, text in table[column].items():
            if text not in allowed:
                raise ValueError(f"{path}, {_describe(table, index)}: {column} {text!r} is not "
                                 f"one of: {', '.join(allowed)}")


def _check_filter(table, column: str, wanted: str | None) -> None:
    known = sorted(set(table[column]) - {""})
    if wanted is not None and wanted not in known:
        raise ValueError(f"unknown {column} {wanted!r}; known: {', '.join(known)}")


def load_paper_results(path: str | os.PathLike | None = None, *, framework: str | None = None,
                       model: str | None = None, metric: str | None = None):
    """The papers' numbers as a pandas DataFrame, one row per number (``value`` a float, every
    other column a string, empty where the source gives none), optionally only the rows of one
    ``framework`` (e.g. ``"OTOv2"``, ``"TPP"``), ``model`` (the package's model names, e.g.
    ``"resnet56"``) and ``metric`` (a key of ``METRICS``).

    A missing column, a value that is not a plain finite number, or a label outside the
    vocabulary raises ValueError naming the line; an unknown filter value raises ValueError
    listing the known ones.
    """
    import pandas as pd

    path = Path(path) if path is not None else paper_results_path()
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    _validate(table, path)
    table = table[list(COLUMNS)].astype({"value": float})
    filters = {"framework": framework, "model": model, "metric": metric}
    for column, wanted in filters.items():
        _check_filter(table, column, wanted)
    for column, wanted in filters.items():
        if wanted is not None:
            table = table[table[column] == wanted]
    return table.reset_index(drop=True)

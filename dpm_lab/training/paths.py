"""Where dpm_lab reads and writes: nothing is ever written inside the installed package.

A user's runs write under ``$DPM_LAB_HOME`` (default: the working directory):

- ``results/``: one JSON record per finished run;
- ``runs/``: checkpoints (per-epoch training state, final models);
- ``figures/``: figures drawn from records.

Records name their checkpoints relative to ``$DPM_LAB_HOME`` (:func:`to_home`), so a home folder
copied elsewhere keeps its records' checkpoints
(:func:`dpm_lab.experiments.results.checkpoint_path`).

The project's committed reference records and figures live apart, under ``results/reference``
and ``figures/reference`` of the repository, and no run writes there: the reference is read
(:func:`reference_dir`) by notebooks and reports, never rewritten by a user's run.

Datasets are looked for in order: an explicit root, ``$DPM_LAB_DATA``, ``$DPM_LAB_HOME/data``,
then ``data/`` and ``shared/data/`` in the working directory and each of its parents (so a
notebook running in ``notebooks/`` finds the repository's ``data/``, and CI finds the offline
slice in ``../shared/data``).
"""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$DPM_LAB_HOME`` if set, else the current working directory."""
    return Path(os.environ.get("DPM_LAB_HOME") or Path.cwd())


def results_dir() -> Path:
    return home() / "results"


def runs_dir() -> Path:
    return home() / "runs"


def figures_dir() -> Path:
    return home() / "figures"


def to_home(path: str | os.PathLike) -> str:
    """How a record names a file: relative to ``home()`` (POSIX separators) when the file lies
    below it, else absolute. A relative name stays valid when ``$DPM_LAB_HOME`` is copied to
    another machine or folder; an absolute one names the machine that wrote it."""
    path = Path(path).resolve()
    try:
        return path.relative_to(home().resolve()).as_posix()
    except ValueError:
        return str(path)


def from_home(name: str | os.PathLike) -> Path:
    """The path a record's file name (:func:`to_home`) stands for: below ``home()`` when
    relative, as it is when absolute."""
    path = Path(name)
    return path if path.is_absolute() else home() / path


def _ancestors() -> list[Path]:
    cwd = Path.cwd().resolve()
    return [cwd, *cwd.parents]


PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]  # dpm_lab/training/paths.py


def repository_file(relative: str) -> Path:
    """A file committed in the repository (e.g. ``data/paper_results.csv``), looked for from the
    working directory upwards, then in the checkout the package was loaded from (so an editable
    install finds it from anywhere). ``FileNotFoundError`` lists every path tried."""
    tried = [base / relative for base in _ancestors()] + [PACKAGE_CHECKOUT / relative]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{relative} not found; looked at: {', '.join(map(str, dict.fromkeys(tried)))}. It ships "
        "in the repository: run from a checkout, or pass the path explicitly")


def reference_dir(kind: str = "results") -> Path | None:
    """The repository's committed reference folder (``results/reference`` or
    ``figures/reference``), found from the working directory upwards, then in the checkout the
    package was loaded from (an editable install, as ``make`` sets up, finds it from anywhere);
    ``None`` where neither is a checkout. ``$DPM_LAB_REFERENCE`` overrides the results folder."""
    if kind not in ("results", "figures"):
        raise ValueError(f"unknown reference kind {kind!r}; choose one of: results, figures")
    if kind == "results" and os.environ.get("DPM_LAB_REFERENCE"):
        return Path(os.environ["DPM_LAB_REFERENCE"])
    for base in [*_ancestors(), PACKAGE_CHECKOUT]:
        if (base / kind / "reference").is_dir():
            return base / kind / "reference"
    return None


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for datasets, in order (see the module docstring)."""
    roots = []
    if root is not None:
        roots.append(Path(root))
    if os.environ.get("DPM_LAB_DATA"):
        roots.append(Path(os.environ["DPM_LAB_DATA"]))
    roots.append(home() / "data")
    for base in _ancestors():
        roots += [base / "data", base / "shared" / "data"]
    seen, out = set(), []
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out

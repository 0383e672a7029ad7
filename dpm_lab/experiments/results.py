"""Result records: one JSON file per run, written atomically, read back as a DataFrame.

A record says everything needed to trust or redo a number: the complete resolved configuration
(``config``) with its hash (``run_id``) and its hash without the seed (``config_id``: runs that
differ only in the seed share it, and only they are pooled into one mean), the profile name,
seed, dataset, model, final and best top-1 (validation accuracy too when a split was held out),
MACs and params, the per-epoch history, wall time, the git revision and whether the working
tree had uncommitted changes (``git_dirty``), the package versions, and what else changes the
numbers a run computes: the CPU model (``cpu``), torch's intra-op thread count (``threads``) and
torch's build (``torch_build``: version, CUDA, the CPU kernels it dispatches to). The same code
and configuration trained with 2 threads and with 1 ended 1.1 points apart (dense run
a30c3bafa5b6: float32 sums are reduced in another order, and 30 epochs amplify it), and float32
random initialisation differs between CPU capabilities (DEFAULT against AVX2); records written
before these fields existed lack them (:func:`provenance` says ``unknown``). Each epoch of the
history names its CPU model and thread count too, so a run resumed on another machine
(``tools/carry_runs.py``) lists every machine in ``trained_on``. The checkpoint is
named relative to ``$DPM_LAB_HOME`` (:func:`checkpoint_path` reads it back). Notebooks and
figures read these files; they never hold typed-in numbers.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..errors import DpmLabError
from ..training import distributed
from ..training.claims import writing
from ..training.engine import cpu_model, machines
from ..training.paths import from_home, results_dir
from .identity import canonical, comparable_id, config_hash

PACKAGES = ("torch", "torchvision", "torch-pruning", "numpy")
SOURCE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def git_state() -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the checkout the package was loaded from; ``("unknown", None)``
    outside git. Read once per process (at import): records name the code that was loaded,
    not a later HEAD."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=SOURCE,
                             capture_output=True, text=True, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=SOURCE, capture_output=True, text=True).stdout.strip()
        return rev, bool(status)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None


def torch_build() -> dict:
    """What torch was built as and dispatches to: version and source commit, CUDA and cuDNN
    versions (``None`` in a CPU build) and the CPU kernel set chosen at run time (``DEFAULT``,
    ``AVX2``, ``AVX512``, ...; they round differently)."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"version": torch.__version__, "git": torch.version.git_version,
            "cuda": torch.version.cuda, "cudnn": cudnn,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def environment() -> dict:
    """Where and with what a record was made (see the module docstring for why each field)."""
    import torch

    versions = {"dpm_lab": __version__}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    rev, dirty = git_state()
    return {"git": rev, "git_dirty": dirty, "python": platform.python_version(),
            "versions": versions, "machine": platform.machine(), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "torch_build": torch_build()}


def benchmark_record(name: str, device, **figures) -> dict:
    """A benchmark's result: the figures plus device, GPU and the provenance of ``environment``
    (threads among it)."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"benchmark": name, "device": str(device), "gpu": gpu, **environment(), **figures}


def make_record(kind: str, *, config: dict, profile: str, seed: int, dataset: str, model: str,
                history: list[dict], macs: int, params: int, wall_time_s: float, **extra) -> dict:
    """A result record. ``final_top1`` is the last epoch's test accuracy; ``best_top1`` the best
    epoch's (reported beside it, never instead of it); ``final_val``/``best_val`` the same on the
    validation split when one was held out."""
    accs = [h["test_acc"] for h in history]
    vals = [h["val_acc"] for h in history if h.get("val_acc") is not None]
    # a run resumed on another machine (tools/carry_runs.py) says so: `cpu` and `threads` name
    # the machine that finished it, `trained_on` every machine in epoch order
    trained_on = machines(history)
    if len(trained_on) > 1:
        extra = {"trained_on": trained_on, **extra}
    return {
        "kind": kind, "profile": profile, "seed": seed, "dataset": dataset, "model": model,
        "run_id": config_hash(config), "config_id": comparable_id(config),
        "final_top1": accs[-1] if accs else None, "best_top1": max(accs) if accs else None,
        "final_val": vals[-1] if vals else None, "best_val": max(vals) if vals else None,
        "macs": macs, "params": params, "wall_time_s": wall_time_s, "config": canonical(config),
        "history": history, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **environment(), **extra,
    }


def write_record(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` as JSON to ``path`` via a temporary file and a rename (atomic). Under DDP
    every rank calls it; rank 0 writes while the others wait."""
    path = Path(path)
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        with writing(path) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=str))
    distributed.barrier()
    return path


def read_finished(path: str | os.PathLike, config: dict) -> dict | None:
    """The record at ``path`` if it holds exactly ``config``, else ``None`` when there is none.

    A record whose configuration differs (impossible unless two configurations share a hash)
    raises instead of being returned in the other's place.
    """
    path = Path(path)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("config") != canonical(config):
        raise DpmLabError(f"{path} holds a different configuration than the run asked for; "
                          "move it away and run again")
    return record


def load_records(directory: str | os.PathLike | None = None, pattern: str = "**/*.json"):
    """All records under ``directory`` (default ``$DPM_LAB_HOME/results``) as a pandas DataFrame,
    one row per run (nested fields such as ``history`` stay Python objects); empty when there are
    none. Files without a ``config_id`` (the format before run identities) are skipped with a
    warning, since what they pooled cannot be told apart."""
    import pandas as pd

    rows, skipped = [], []
    for f in sorted(Path(directory or results_dir()).glob(pattern)):
        rec = json.loads(f.read_text())
        if "benchmark" in rec:
            continue
        if "config_id" not in rec:
            skipped.append(f)
            continue
        rec["path"] = str(f)
        rows.append(rec)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} records without a run identity (old format), "
                      f"e.g. {skipped[0]}")
    return pd.DataFrame(rows)


def checkpoint_path(record: dict) -> Path:
    """The checkpoint a record names. Records name it relative to ``$DPM_LAB_HOME``
    (``paths.to_home``), and it is looked for below the reader's home (``$DPM_LAB_HOME``, else
    the working directory: the rule its ``runs/`` folder follows); a record read from a file
    (:func:`load_records` adds its ``path``) is also looked for below the folders above that
    file, nearest first, so the records of a home read from elsewhere (a notebook's folder, a
    copy) find their checkpoints. Records written before name the absolute path on the machine
    that ran them, which is used where it exists, else looked for below this home's ``runs/``
    (the part after its last ``runs`` folder), so a copied runs folder is found. Returns the
    first of these that exists, else the path below the reader's home or the absolute path the
    record names."""
    name = Path(record["checkpoint"])
    if not name.is_absolute():
        here = from_home(name)
        if here.exists() or not record.get("path"):
            return here
        return next((base / name for base in Path(record["path"]).absolute().parents
                     if (base / name).exists()), here)
    if "runs" in name.parts[:-1]:
        last = len(name.parts) - 1 - name.parts[::-1].index("runs")
        moved = from_home(Path(*name.parts[last:]))
        if not name.exists() and moved.exists():
            return moved
    return name


PROVENANCE = ("git", "cpu", "threads", "training_path")


def provenance(records):
    """The distinct combinations of code revision (``git``, with ``-dirty`` for uncommitted
    changes), CPU model, torch thread count and training-path version behind ``records`` (a
    :func:`load_records` frame or a list of records), one row each with its number of
    ``runs``. Each of them can change what the same configuration computes, so a table or figure
    drawing on more than one row pools or pairs runs that need not agree even where their
    configurations do. A run trained on several machines (``trained_on``) names them all, joined
    by ``" + "``. Records written before a field existed read ``"unknown"`` (CPU, threads) and
    ``"unversioned"`` (training path)."""
    import pandas as pd

    rows = records.to_dict("records") if isinstance(records, pd.DataFrame) else list(records)
    combos = []
    for r in rows:
        dirty = "-dirty" if _known(r.get("git_dirty")) and r["git_dirty"] else ""
        threads = r.get("threads")
        config = r.get("config") if isinstance(r.get("config"), dict) else {}
        cpu = r["cpu"] if _known(r.get("cpu")) else "unknown"
        threads = str(int(threads)) if _known(threads) else "unknown"
        if isinstance(r.get("trained_on"), list):  # resumed on other machines: all of them
            cpu = " + ".join(m["cpu"] for m in r["trained_on"])
            threads = " + ".join(str(m["threads"]) for m in r["trained_on"])
        combos.append((f"{r.get('git', 'unknown')}{dirty}", cpu, threads,
                       str(config.get("training_path", "unversioned"))))
    table = pd.DataFrame(combos, columns=list(PROVENANCE))
    return (table.groupby(list(PROVENANCE)).size().rename("runs").reset_index()
            if len(table) else table.assign(runs=pd.Series(dtype=int)))


def _known(value) -> bool:
    """Whether a record field holds a value (a frame of records has NaN where one lacks it)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


git_state()

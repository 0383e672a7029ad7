"""Result records: one JSON file per run, written atomically, read back as a DataFrame.

A record says everything needed to trust or redo a number: the complete resolved configuration
(``config``) with its hash (``run_id``) and its hash without the seed (``config_id``: runs that
differ only in the seed share it, and only they are pooled into one mean), the profile name,
seed, dataset, model, final and best top-1 (validation accuracy too when a split was held out),
MACs and params, the per-epoch history, wall time, the git revision and whether the working
tree had uncommitted changes (``git_dirty``), and the package versions. Notebooks and figures
read these files; they never hold typed-in numbers.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
import warnings
from importlib import metadata
from pathlib import Path

from . import __version__, distributed
from .paths import results_dir
from .runspec import canonical, comparable_id, config_hash

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


def environment() -> dict:
    versions = {"dpm_lab": __version__}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    rev, dirty = git_state()
    return {"git": rev, "git_dirty": dirty, "python": platform.python_version(),
            "versions": versions, "machine": platform.machine()}


def benchmark_record(name: str, device, **figures) -> dict:
    """A benchmark's result: the figures plus device, threads and the provenance of ``environment``."""
    import torch

    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"benchmark": name, "device": str(device), "gpu": gpu,
            "threads": torch.get_num_threads(), **environment(), **figures}


def make_record(kind: str, *, config: dict, profile: str, seed: int, dataset: str, model: str,
                history: list[dict], macs: int, params: int, wall_time_s: float, **extra) -> dict:
    """A result record. ``final_top1`` is the last epoch's test accuracy; ``best_top1`` the best
    epoch's (reported beside it, never instead of it); ``final_val``/``best_val`` the same on the
    validation split when one was held out."""
    accs = [h["test_acc"] for h in history]
    vals = [h["val_acc"] for h in history if h.get("val_acc") is not None]
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
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, path)
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
        raise RuntimeError(f"{path} holds a different configuration than the run asked for; "
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


git_state()

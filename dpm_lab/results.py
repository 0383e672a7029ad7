"""Result records: one JSON file per run, written atomically, read back as a DataFrame.

A record says everything needed to trust or redo a number: the config, profile, seed, dataset,
model, final and best top-1, MACs and params, the per-epoch history, wall time, git revision and
package versions. Notebooks and figures read these files; they never hold typed-in numbers.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from .data import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results"
PACKAGES = ("torch", "torchvision", "torch-pruning", "numpy")


@functools.lru_cache(maxsize=None)
def git_revision() -> str:
    """The checkout's commit (with ``-dirty`` when files differ), or ``unknown`` outside git.
    Read once per process (at import): records name the code that was loaded, not a later HEAD."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {"git": git_revision(), "python": platform.python_version(), "versions": versions,
            "machine": platform.machine()}


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
    epoch's (reported beside it, never instead of it)."""
    accs = [h["test_acc"] for h in history]
    return {
        "kind": kind, "profile": profile, "seed": seed, "dataset": dataset, "model": model,
        "final_top1": accs[-1] if accs else None, "best_top1": max(accs) if accs else None,
        "macs": macs, "params": params, "wall_time_s": wall_time_s, "config": config,
        "history": history, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **environment(), **extra,
    }


def write_record(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` as JSON to ``path`` via a temporary file and a rename (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
    return path


def load_records(directory: str | os.PathLike = RESULTS_DIR, pattern: str = "**/*.json"):
    """All records under ``directory`` as a pandas DataFrame (one row per run; nested fields such
    as ``history`` stay Python objects). Empty DataFrame when there are none."""
    import pandas as pd

    rows = []
    for f in sorted(Path(directory).glob(pattern)):
        rec = json.loads(f.read_text())
        rec["path"] = str(f)
        rows.append(rec)
    return pd.DataFrame(rows)


git_revision()

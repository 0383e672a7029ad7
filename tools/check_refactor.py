"""Check that a refactor changed no behaviour: compare two checkouts of dpm_lab run by run.

Why: moving modules (issue 26's layout) must not change what a run computes, which runs an
experiment file asks for, or what a figure shows; tests pin parts of that, this compares all of
it between the tree before and the tree after.

    python tools/check_refactor.py snapshot TREE OUT   # record TREE's behaviour into OUT
    python tools/check_refactor.py compare OLD NEW     # compare two snapshots; exit 1 on a
    difference

``snapshot`` runs everything in TREE (``PYTHONPATH=TREE``, working directory TREE, one thread):

- ``ids.json``: for every ``configs/**/*.toml``, the sweep's specs in order (their non-``None``
  fields) and each one's resolved run id;
- ``records/``: one smoke run of every host × method into a fresh ``DPM_LAB_HOME``, every record
  JSON it wrote (the dense one too);
- ``figures/``: ``figures`` for every profile with reference records, and ``report`` of the
  reference records (each folder of ``results/reference`` that holds profile folders), with the
  report's printed tables;
- ``help/``: the help text of the commands.

``compare`` requires the same id lists, the same record files with equal fields except those in
``VOLATILE`` (wall times and throughput, timestamps, the machine's state and software), histories
equal but for their per-epoch time and throughput, CSV files equal byte for byte, PNG files equal
pixel for pixel, and printed text equal once the tree's path is replaced by ``TREE``.

The id snapshot imports the package, so it knows both layouts (before and after issue 26).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = [("core", m) for m in ("single-step", "sp", "dpm", "iterative", "tpp", "tpp+dpm")] + [
    (h, m) for h in ("depgraph", "otov2", "gatedecorator") for m in ("host", "sp", "dpm")]
PROFILES = ("smoke", "mini", "full", "paper")
HELP = [[], ["run"], ["sweep"], ["report"], ["figures"], ["train"], ["main-job"], ["download"]]
# record keys that describe when, where and how fast a run went, not what it computed
VOLATILE = {"wall_time_s", "created", "git", "git_dirty", "python", "machine", "cpu", "threads",
            "torch_build", "versions", "epoch_time_s", "images_per_s"}

IDS = r"""
import glob, json, sys
try:
    from dpm_lab.experiments.cli import _sweep_specs
    from dpm_lab.experiments.experiment_file import load_experiment
    from dpm_lab.experiments.runspec import resolve
except ImportError:
    from dpm_lab.cli import _sweep_specs
    from dpm_lab.experiment_file import load_experiment
    from dpm_lab.runspec import resolve
from dataclasses import fields
out = {}
for f in sorted(glob.glob("configs/**/*.toml", recursive=True)):
    specs = _sweep_specs(load_experiment(f), sweep=True)
    out[f] = [[{k.name: str(getattr(s, k.name)) for k in fields(s)
                if getattr(s, k.name) is not None}, resolve(s).run_id] for s in specs]
json.dump(out, open(sys.argv[1], "w"), indent=0, sort_keys=True)
"""


def _env(tree: Path, home: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "DPM_LAB_HOME": str(home),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "DPM_LAB_DATA": os.environ.get("DPM_LAB_DATA", "/work/shared/data"),
            "DPM_LAB_PROFILE": "smoke"}


def _dpm(tree: Path, home: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run([sys.executable, "-m", "dpm_lab", *args], cwd=tree, text=True,
                          env=_env(tree, home), capture_output=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {tree}:\n{done.stderr[-3000:]}")
    return (done.stdout + done.stderr).replace(str(tree), "TREE").replace(str(home), "HOME")


def snapshot(tree: Path, out: Path, parts: set[str]) -> None:
    tree, out = tree.resolve(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="check_refactor_"))
    if "ids" in parts:
        subprocess.run([sys.executable, "-c", IDS, str(out / "ids.json")], cwd=tree, check=True,
                       env=_env(tree, home), stderr=subprocess.DEVNULL)
        print(f"ids: {sum(len(v) for v in json.loads((out / 'ids.json').read_text()).values())}")
    if "help" in parts:
        (out / "help").mkdir(exist_ok=True)
        for cmd in HELP:
            text = _dpm(tree, home, *cmd, "--help", check=False)
            (out / "help" / f"{'-'.join(cmd) or 'top'}.txt").write_text(text)
    if "figures" in parts:
        figs = out / "figures"
        reference = tree / "results" / "reference"
        for profile in sorted(p.name for p in reference.iterdir() if p.name in PROFILES):
            text = _dpm(tree, home, "figures", "--profile", profile, "--results-dir",
                        str(reference), "--out", str(figs / f"figures_{profile}"))
            (figs / f"figures_{profile}.txt").write_text(text.replace(str(figs), "OUT"))
        for folder in [reference, *sorted(p for p in reference.iterdir() if p.is_dir())]:
            for profile in sorted(p.name for p in folder.iterdir() if p.name in PROFILES):
                name = f"report_{folder.relative_to(reference.parent).name}_{profile}"
                text = _dpm(tree, home, "report", "--profile", profile, "--results-dir",
                            str(folder), "--out", str(figs / name))
                (figs / f"{name}.txt").write_text(text.replace(str(figs), "OUT"))
        print(f"figures: {sum(1 for _ in figs.rglob('*.*'))} files")
    if "records" in parts:
        for host, method in RUNS:
            _dpm(tree, home, "run", "--profile", "smoke", "--host", host, "--method", method,
                 "--seed", "0", "--no-figure")
            print(f"run {host} {method}", flush=True)
        records = out / "records"
        for path in sorted((home / "results").rglob("*.json")):
            target = records / path.relative_to(home / "results")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
        print(f"records: {sum(1 for _ in records.rglob('*.json'))}")


def _strip(value):
    """``value`` without the VOLATILE keys, at any depth."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGBA"))


def compare(old: Path, new: Path) -> int:
    import numpy as np

    problems, counts = [], {}
    if (old / "ids.json").exists():
        a, b = (json.loads((d / "ids.json").read_text()) for d in (old, new))
        counts["experiment files"] = len(a)
        counts["run ids"] = sum(len(v) for v in a.values())
        if a.keys() != b.keys():
            problems.append(f"experiment files differ: {sorted(a.keys() ^ b.keys())}")
        for f in sorted(a.keys() & b.keys()):
            if a[f] != b[f]:
                problems.append(f"{f}: specs or run ids differ ({len(a[f])} vs {len(b[f])})")
    files_a = {p.relative_to(old) for p in old.rglob("*") if p.is_file()} - {Path("ids.json")}
    files_b = {p.relative_to(new) for p in new.rglob("*") if p.is_file()} - {Path("ids.json")}
    for p in sorted(files_a ^ files_b):
        problems.append(f"only in {'old' if p in files_a else 'new'}: {p}")
    for p in sorted(files_a & files_b):
        pa, pb = old / p, new / p
        kind = ("record" if p.parts[0] == "records" else
                "help text" if p.parts[0] == "help" else p.suffix.lstrip(".") or "file")
        if kind == "pdf":
            continue  # the PNG of the same drawing is compared pixel for pixel
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "record":
            ra, rb = (json.loads(x.read_text()) for x in (pa, pb))
            if _strip(ra.get("history")) != _strip(rb.get("history")):
                problems.append(f"{p}: history differs")
            if _strip(ra) != _strip(rb):
                keys = sorted(k for k in ra.keys() - VOLATILE | rb.keys() - VOLATILE
                              if _strip(ra.get(k)) != _strip(rb.get(k)))
                problems.append(f"{p}: fields differ: {keys}")
        elif kind == "png":
            xa, xb = _pixels(pa), _pixels(pb)
            if xa.shape != xb.shape or not np.array_equal(xa, xb):
                problems.append(f"{p}: pixels differ")
        elif kind == "txt":  # printed text: the snapshot folder's own path aside
            if (pa.read_text().replace(str(old), "SNAPSHOT")
                    != pb.read_text().replace(str(new), "SNAPSHOT")):
                problems.append(f"{p}: differs")
        elif pa.read_bytes() != pb.read_bytes():
            problems.append(f"{p}: differs")
    print("compared: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    print(f"excluded record keys: {', '.join(sorted(VOLATILE))}")
    for line in problems:
        print(f"DIFFERENT {line}")
    print("no differences" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "snapshot":
        parts = set(argv[3].split(",")) if len(argv) > 3 else {"ids", "help", "figures",
                                                               "records"}
        snapshot(Path(argv[1]), Path(argv[2]), parts)
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

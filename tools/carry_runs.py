"""Carry a long sweep from one machine to the next through the repository.

A sweep of the full profile runs for many hours, longer than one working session, and what it
leaves under ``$DPM_LAB_HOME`` (``results/``, ``runs/``) is gone when the machine is. Its records
are committed under ``results/reference/`` anyway; what else it needs to go on elsewhere is:

- the **shared phases' weights**: every dense model (``runs/<profile>/dense/*/model.pt``), which
  every pruning run of that seed starts from, and every DepGraph sparse-learning run
  (``runs/<profile>/depgraph/sl_*/``), shared by host, +SP and +DPM. Re-training one on another
  machine could give other weights under the same run id (float results change with the CPU
  model and thread count), and the runs of a seed would then no longer share their start;
- the **resume checkpoints** (``*.ckpt``) of runs that have not finished, so that the epochs
  already trained are not trained again.

Finished pruning runs need nothing: their records are enough. ``save`` copies those files into
``checkpoints/`` (committed; same layout as ``runs/``) and the sweep's new records into the
reference folder; ``restore`` copies both into a fresh home, where the same sweep command then
reads back the finished runs and resumes the rest. ``save`` also deletes carried resume
checkpoints whose run has finished since, so the folder holds only what is still needed. One
home per reference folder: ``save`` copies every record of the home into ``--reference``.

    python tools/carry_runs.py save    --home H --reference results/reference/recipe-search
    python tools/carry_runs.py restore --home H --reference results/reference/recipe-search

(``--checkpoints`` changes the carried folder, default ``checkpoints/`` of this repository.)
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_WEIGHTS = ("model.pt", "history.json")


def is_shared_phase(run: Path) -> bool:
    """A run folder whose final weights later runs start from: a dense model, or a DepGraph
    sparse-learning run (``runs/<profile>/<kind>/<name>``)."""
    return run.parent.name == "dense" or run.name.startswith("sl_")


def carried_files(runs: Path) -> list[Path]:
    """The files under ``runs`` (relative to it) that a sweep needs to go on elsewhere: the final
    weights of finished shared phases, the resume checkpoints of unfinished runs."""
    files = []
    for run in sorted(p for p in runs.glob("*/*/*") if p.is_dir()):
        if (run / "model.pt").exists():
            names = SHARED_WEIGHTS if is_shared_phase(run) else ()
            files += [run / n for n in names if (run / n).exists()]
        else:
            files += sorted(run.glob("*.ckpt"))
    return [f.relative_to(runs) for f in files]


def copy_if_changed(source: Path, out: Path) -> bool:
    """Copy ``source`` to ``out`` unless ``out`` already holds the same bytes; True if copied."""
    if out.exists() and out.read_bytes() == source.read_bytes():
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, out)
    return True


def copy_new(source: Path, target: Path, pattern: str, overwrite: bool) -> list[Path]:
    """Copy the files of ``source`` matching ``pattern`` into the same place under ``target``,
    where they are missing (or, with ``overwrite``, differ); returns the copied paths
    (relative)."""
    return [f.relative_to(source) for f in sorted(source.glob(pattern))
            if f.is_file() and (overwrite or not (target / f.relative_to(source)).exists())
            and copy_if_changed(f, target / f.relative_to(source))]


def save(home: Path, reference: Path, checkpoints: Path) -> None:
    runs = home / "runs"
    needed = set(carried_files(runs)) if runs.exists() else set()
    for rel in sorted(needed):
        if copy_if_changed(runs / rel, checkpoints / rel):
            print(f"carried   {checkpoints / rel}")
    # a resume checkpoint carried earlier whose run has finished here is no longer needed (runs
    # this home does not have are left alone: another sweep may be carrying them)
    for old in sorted(checkpoints.glob("*/*/*/*.ckpt")):
        if (runs / old.relative_to(checkpoints).parent / "model.pt").exists():
            old.unlink()
            print(f"dropped   {old} (its run finished)")
    for rel in copy_new(home / "results", reference, "**/*.json", overwrite=True):
        print(f"record    {reference / rel}")


def restore(home: Path, reference: Path, checkpoints: Path) -> None:
    """Copy what is missing only: a home that went on after the last ``save`` keeps its newer
    resume checkpoints."""
    n_runs = len(copy_new(checkpoints, home / "runs", "*/*/*/*", overwrite=False))
    n_records = len(copy_new(reference, home / "results", "**/*.json", overwrite=False))
    print(f"restored {n_runs} checkpoint files into {home / 'runs'} and {n_records} records into "
          f"{home / 'results'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("--home", type=Path, required=True,
                        help="the sweep's $DPM_LAB_HOME (holds results/ and runs/)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="where its records are committed, e.g. results/reference/full")
    parser.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints",
                        help="the committed folder of carried checkpoints (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.home.is_dir():
        parser.error(f"--home {args.home} is not a folder")
    action = save if args.action == "save" else restore
    action(args.home.resolve(), args.reference.resolve(), args.checkpoints.resolve())


if __name__ == "__main__":
    main()

"""Carry a long sweep from one machine to the next through the repository.

A sweep of the full profile runs for many hours, longer than one working session, and what it
leaves under ``$DPM_LAB_HOME`` (``results/``, ``runs/``) is gone when the machine is. Its records
are committed under ``results/reference/`` anyway; what else it needs to go on elsewhere is:

- the **shared phases**: every dense model (``runs/<profile>/dense/<name>/model.pt``, carried
  with its record as ``record.json``), which every pruning run of that seed starts from, and every
  DepGraph sparse-learning run (``runs/<profile>/depgraph/sl_*/``: ``model.pt``,
  ``history.json``), shared by host, +SP and +DPM. Re-training one on another machine could give
  other weights under the same run id (float results change with the CPU model and thread
  count), and the runs of a seed would then no longer share their start;
- the **resume checkpoints** (``*.ckpt``) of runs that have not finished, so that the epochs
  already trained are not trained again. A run is finished when its record exists (a
  sparse-learning run, which has none: when its ``model.pt`` does), since the runner writes the
  weights first and the record last.

Finished pruning runs need nothing: their records are enough (their pruned ``model.pt`` is not
carried). ``save`` copies those files into ``checkpoints/`` (git-ignored: keep it on lasting
storage; same layout as ``runs/``) and the sweep's records into the reference folder; ``restore``
copies what is missing into a fresh home, where the same sweep command then reads back the finished
runs and resumes the rest. ``save`` refuses to replace a carried shared phase or a committed record
by different bytes (that would change what committed runs started from) unless ``--force``, and
deletes carried resume checkpoints whose run has finished since. One home per reference folder:
``save`` copies every record of the home into ``--reference``.

    python tools/carry_runs.py save    --home H --reference results/reference/recipe-search
    python tools/carry_runs.py restore --home H --reference results/reference/recipe-search

(``--checkpoints`` changes the carried folder, default ``checkpoints/`` of this repository.)
A carried run resumed on another CPU model or thread count goes on with that machine's floats;
its record then lists every machine it trained on (``trained_on``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from dpm_lab.experiments.profiles import PROFILE_NAMES

REPO = Path(__file__).resolve().parent.parent
DENSE_RECORD = "record.json"  # a carried dense model's record, beside its weights


def record_path(home: Path, run: Path) -> Path:
    """The record of the run folder ``runs/<profile>/<kind>/<name>``:
    ``results/<profile>/<kind>/<name>.json``."""
    return home / "results" / run.parent.parent.name / run.parent.name / f"{run.name}.json"


def is_sparse_learning(run: Path) -> bool:
    return run.name.startswith("sl_")


def is_dense(run: Path) -> bool:
    return run.parent.name == "dense"


def finished(home: Path, run: Path) -> bool:
    """A dense model needs its weights as well as its record: one restored from the committed
    records alone is being trained again, and its resume checkpoint must travel."""
    if is_sparse_learning(run):
        return (run / "model.pt").exists()
    if is_dense(run):
        return record_path(home, run).exists() and (run / "model.pt").exists()
    return record_path(home, run).exists()


def carried_files(home: Path) -> dict[Path, Path]:
    """What a sweep in ``home`` needs to go on elsewhere, as ``{path under checkpoints/: source}``:
    the finished shared phases (dense weights and record, sparse-learning weights and history)
    and the resume checkpoints of unfinished runs."""
    runs, files = home / "runs", {}
    for run in sorted(p for p in runs.glob("*/*/*") if p.is_dir()):
        rel = run.relative_to(runs)
        if not finished(home, run):
            files.update({rel / f.name: f for f in sorted(run.glob("*.ckpt"))})
        elif is_dense(run):
            files.update({rel / "model.pt": run / "model.pt",
                          rel / DENSE_RECORD: record_path(home, run)})
        elif is_sparse_learning(run):
            files.update({rel / n: run / n for n in ("model.pt", "history.json")})
    return files


def run_records(results: Path) -> list[Path]:
    """The run records under a results folder, ``<profile>/<kind>/<name>.json`` (relative): not
    the committed ``reference/`` folder of a home that is a clone of this repository. A reference
    folder named after a profile (``results/reference/full``) holds ``<kind>/<name>.json``."""
    if results.name in PROFILE_NAMES:
        return [results.name / f.relative_to(results) for f in sorted(results.glob("*/*.json"))]
    return [f.relative_to(results) for f in sorted(results.glob("*/*/*.json"))
            if f.relative_to(results).parts[0] in PROFILE_NAMES]


def in_reference(reference: Path, rel: Path) -> Path | None:
    """Where the record ``rel`` (``<profile>/<kind>/<name>.json``) is kept under ``reference``:
    ``reference/rel``, or ``reference/<kind>/<name>.json`` in a reference folder named after its
    profile; ``None`` for another profile's record, which such a folder does not take."""
    if reference.name not in PROFILE_NAMES:
        return reference / rel
    return reference / rel.relative_to(rel.parts[0]) if rel.parts[0] == reference.name else None


def differs(source: Path, out: Path) -> bool:
    return not (out.exists() and out.read_bytes() == source.read_bytes())


def copy(source: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, out)


def save(home: Path, reference: Path, checkpoints: Path, force: bool = False) -> None:
    if reference.is_relative_to(home / "results"):
        sys.exit(f"--reference {reference} lies inside the home's results folder; give the "
                 "committed reference folder, e.g. results/reference/full")
    carried = {checkpoints / rel: src for rel, src in carried_files(home).items()}
    # a dense record restored from checkpoints/ (another sweep's) is not this sweep's record
    records = {}
    for rel in run_records(home / "results"):
        out = in_reference(reference, rel)
        if out is not None and not (checkpoints / rel.with_suffix("") / DENSE_RECORD).exists():
            records[out] = home / "results" / rel
    # resume checkpoints move on; shared phases and records must never change under their id
    fixed = {out: src for out, src in {**carried, **records}.items() if out.suffix != ".ckpt"}
    conflicts = [out for out, src in fixed.items() if out.exists() and differs(src, out)]
    if conflicts and not force:
        sys.exit("refusing to replace committed files by different ones (runs already recorded "
                 "may have started from them); --force replaces them:\n  "
                 + "\n  ".join(map(str, conflicts)))
    for out, src in {**carried, **records}.items():
        if differs(src, out):
            copy(src, out)
            print(f"saved     {out}")
    for old in sorted(checkpoints.glob("*/*/*/*.ckpt")):  # resume state of a run now finished
        rel = old.parent.relative_to(checkpoints)
        committed = in_reference(reference, Path(f"{rel}.json"))
        # by another home: a pruning run's committed record, a dense model's carried weights
        elsewhere = ((old.parent / "model.pt").exists() if is_dense(rel)
                     else committed is not None and committed.exists())
        if finished(home, home / "runs" / rel) or elsewhere:
            old.unlink()
            print(f"dropped   {old} (its run finished)")


def restore(home: Path, reference: Path, checkpoints: Path) -> None:
    """Copy what is missing only: a home that went on after the last ``save`` keeps its newer
    resume checkpoints."""
    wanted = {}
    for f in sorted(checkpoints.glob("*/*/*/*")):
        run = home / "runs" / f.parent.relative_to(checkpoints)
        # a dense record goes where the runner looks for it
        wanted[record_path(home, run) if f.name == DENSE_RECORD else run / f.name] = f
    wanted.update({home / "results" / rel: in_reference(reference, rel)
                   for rel in run_records(reference)})
    missing = {out: src for out, src in wanted.items() if not out.exists()}
    for out, src in missing.items():
        copy(src, out)
    print(f"restored {len(missing)} files into {home} (checkpoints from {checkpoints}, records "
          f"from {reference})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("--home", type=Path, required=True,
                        help="the sweep's $DPM_LAB_HOME (holds results/ and runs/)")
    parser.add_argument("--reference", type=Path, required=True,
                        help="where its records are committed, e.g. results/reference/full")
    parser.add_argument("--checkpoints", type=Path, default=REPO / "checkpoints",
                        help="the folder of carried checkpoints, on storage that outlives "
                             "the machine (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="save: replace committed shared phases or records that differ")
    args = parser.parse_args(argv)
    if not args.home.is_dir():
        parser.error(f"--home {args.home} is not a folder")
    home, reference, checkpoints = (p.resolve() for p in (args.home, args.reference,
                                                          args.checkpoints))
    if args.action == "save":
        save(home, reference, checkpoints, args.force)
    else:
        restore(home, reference, checkpoints)


if __name__ == "__main__":
    main()

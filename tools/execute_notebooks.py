"""Execute the notebooks in place with papermill, outputs kept, so that the committed notebooks
show their tables and figures (on GitHub too) without anyone running them.

    python tools/execute_notebooks.py [--profile smoke|mini|paper] [NOTEBOOK ...]

(``make notebooks``, ``make notebooks PROFILE=mini``). Without NOTEBOOK, every numbered notebook
under ``notebooks/``, in order. Each one runs with ``notebooks/`` as its working folder and
``$DPM_LAB_HOME`` at the repository root, as ``make lab`` runs them, so a mini execution reuses
the runs of the command line. The first output of each notebook names the profile
(``dpm_lab.reporting.notebook.setup``); the recorded comparisons come from ``results/reference``
whatever the profile.

The profile goes in through ``$DPM_LAB_PROFILE``, not ``-p PROFILE``: papermill would leave an
``injected-parameters`` cell behind that pins its value for every later run, nbval in CI and a
reader in Jupyter alike. A notebook is replaced only when its execution succeeded; on an error
papermill's copy, with the outputs up to the failing cell, is left in a temporary folder (its
path is printed). Papermill's timing metadata is dropped, so that executing again changes
outputs only. nbval-lax keeps running the executed notebooks in CI without comparing outputs
(it compares only cells marked ``# NBVAL_CHECK_OUTPUT``, and none is).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

from dpm_lab.experiments.profiles import PROFILE_NAMES

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def write_without_timings(executed: Path, path: Path) -> None:
    """``executed`` over ``path``, without papermill's per-run metadata (times, durations)."""
    nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
    nbformat.write(nb, path)


def execute(path: Path, profile: str) -> bool:
    """Run ``path`` (its kernel inherits ``$DPM_LAB_PROFILE`` = ``profile``) and replace it
    with the executed copy; False on an error, leaving ``path`` as it was."""
    executed = Path(tempfile.mkdtemp(prefix="dpm_lab_notebook_")) / path.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(path, executed, cwd=NOTEBOOKS, progress_bar=False)
    except papermill.PapermillExecutionError as error:
        print(f"{path.name}: FAILED after {time.perf_counter() - start:.0f} s in cell "
              f"{error.exec_count} ({error.ename}: {error.evalue}); outputs so far: {executed}")
        return False
    write_without_timings(executed, path)
    print(f"{path.name}: {profile}, {time.perf_counter() - start:.0f} s")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", choices=PROFILE_NAMES,
                        help="the profile every notebook runs in (default: smoke)")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to execute (default: notebooks/[0-9]*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    os.environ.update(DPM_LAB_PROFILE=args.profile, DPM_LAB_HOME=str(REPO))
    failures = [p.name for p in paths if not execute(p.resolve(), args.profile)]
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

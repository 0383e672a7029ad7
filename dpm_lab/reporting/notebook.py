"""The setup every notebook repeats, so that a notebook holds its narrative and calls only.

A notebook's first code cell is its papermill ``parameters`` cell, and it holds literals only.
Papermill injects the values it is given in a new cell *after* that cell, so anything computed
inside it (the profile, the output folders, a per-profile value) would be computed from the
defaults and silently kept: ``papermill -p PROFILE smoke`` would run ``mini``. The cell after it
calls :func:`setup` with the parameters, and :meth:`Setup.per_profile` picks the values that
differ by profile.

``PROFILE = None`` selects the profile the way the command line does: ``$DPM_LAB_PROFILE``, else
``mini`` (so ``DPM_LAB_PROFILE=smoke pytest --nbval-lax notebooks/`` runs them all in smoke).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..experiments.profiles import Profile, get_profile
from ..training.paths import home


@dataclass(frozen=True)
class Setup:
    """What a notebook runs with.

    ``dirs`` goes to ``run``, ``sweep`` and ``train_dense`` as keyword arguments: in ``smoke``
    it names throw-away folders for records and checkpoints, so smoke runs (tests, CI) never
    write into ``results/`` or ``runs/``; in the other profiles it is empty and runs write under
    ``$DPM_LAB_HOME``, where a finished run with the same configuration is read back.
    ``fig_dir`` is a throw-away folder for the PNG files that figure functions write (the
    notebook shows them inline)."""

    profile: Profile
    dirs: dict[str, str]
    fig_dir: Path

    def per_profile(self, value):
        """``value[profile name]`` when ``value`` is a dict (a parameter whose default differs
        by profile, e.g. ``{"smoke": 1, "mini": 15, "paper": 60}``), else ``value`` itself (a
        value given with ``papermill -p`` holds for whatever profile runs)."""
        if not isinstance(value, dict):
            return value
        if self.profile.name not in value:
            raise ValueError(f"no value for profile {self.profile.name!r} in {value!r}; give one "
                             f"for each profile the notebook runs in, or a single value")
        return value[self.profile.name]

    def describe(self) -> str:
        """One line naming the profile and where runs write: the first output of an executed
        notebook, so a reader knows which profile its numbers come from."""
        where = ("records and checkpoints go to throw-away folders" if self.dirs else
                 f"runs write under {home().resolve()} (results/, runs/); a finished run with "
                 "the same configuration is read back instead of trained again")
        p = self.profile
        notes = f" ({p.notes})" if p.notes else ""
        return (f"profile {p.name}{notes}: {p.model} on {p.dataset}, N = {p.decay_steps} decay "
                f"steps; {where}")


def setup(profile: str | None = None, seed: int = 0) -> Setup:
    """The notebook's :class:`Setup` for the ``PROFILE`` and ``SEED`` parameters; seeds torch's
    global generator (example inputs, models built in the notebook, the random criterion) so a
    rerun shows the same numbers, and prints the profile, so every executed notebook names the
    profile its outputs come from."""
    resolved = get_profile(profile)
    torch.manual_seed(seed)
    dirs = ({"results_dir": tempfile.mkdtemp(prefix="dpm_lab_results_"),
             "runs_dir": tempfile.mkdtemp(prefix="dpm_lab_runs_")}
            if resolved.name == "smoke" else {})
    nb = Setup(resolved, dirs, Path(tempfile.mkdtemp(prefix="dpm_lab_figures_")))
    print(nb.describe())
    return nb

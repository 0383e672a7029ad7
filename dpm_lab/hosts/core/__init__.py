"""Core: pruning on DPM's own selection (``--host core``), the methods the paper's core table
compares.

- :mod:`.single_step` — single-step pruning, the baseline that Smooth Pruning with N = 1
  reproduces;
- :mod:`.smooth` — Smooth Pruning (``sp``) and DPM (``dpm``, with Self-Rectifying);
- :mod:`.iterative` — iterative pruning (k physical removals, linear or AGP schedule);
- :mod:`.options` — their run options, resolved into the run's configuration.

The algorithms they run are :mod:`dpm_lab.pruning`'s; TPP, which also runs under ``--host
core``, has its own folder (:mod:`dpm_lab.hosts.tpp`).
"""
from ...experiments.host import HostEntry
from .iterative import Iterative
from .options import refusals, resolve
from .single_step import SingleStep
from .smooth import SmoothDecay

ENTRY = HostEntry(host="core", methods={"single-step": SingleStep, "sp": SmoothDecay,
                                        "dpm": SmoothDecay, "iterative": Iterative},
                  resolve=resolve, refusals=refusals)

"""Pruning methods, one file each, all in the one shape of :class:`.base.Method` that the
pipeline (:func:`dpm_lab.experiments.run`) runs: start model → ``prepare`` → ``fit`` with
``hooks`` and ``optimizer`` → ``finalize`` → record.

- :mod:`.single_step` — core single-step pruning (the baseline);
- :mod:`.smooth` — core Smooth Pruning / DPM;
- :mod:`.iterative` — core iterative pruning (k physical removals, linear or AGP schedule);
- :mod:`.depgraph` — DepGraph (Torch-Pruning ``group_sl``) alone, +SP, +DPM;
- :mod:`.otov2` — OTOv2 (DHSPG) alone, +SP, +DPM;
- :mod:`.gatedecorator` — Gate Decorator (Tick-Tock) alone, +SP, +DPM;
- :mod:`.tpp` — TPP, and TPP × DPM.
"""
from .base import Context, Method, finish_decay, rectifier, selection_rounds
from .depgraph import DepGraph
from .gatedecorator import GateDecorator
from .iterative import Iterative
from .otov2 import OTOv2
from .single_step import SingleStep
from .smooth import SmoothDecay
from .tpp import TPP


def method_class(host: str, method: str) -> type[Method]:
    """The class that runs ``method`` on ``host`` (both already validated by the run spec)."""
    if host == "core":
        return {"single-step": SingleStep, "iterative": Iterative, "tpp": TPP,
                "tpp+dpm": TPP}.get(method, SmoothDecay)
    return {"depgraph": DepGraph, "otov2": OTOv2, "gatedecorator": GateDecorator}[host]


__all__ = ["Context", "Method", "method_class", "selection_rounds", "rectifier", "finish_decay",
           "SingleStep", "SmoothDecay", "Iterative", "DepGraph", "OTOv2", "GateDecorator", "TPP"]

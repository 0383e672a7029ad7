"""The registry of hosts: every folder below is one host, or one family of methods on DPM's own
selection, holding all of it (its algorithm, its methods for the pipeline, its recipe, its run
options), and describes itself in one :class:`~dpm_lab.experiments.host.HostEntry`.

Each host decides *when* and *what* to prune; Smooth Pruning and Self-Rectifying
(:mod:`dpm_lab.pruning`) replace only its one-step removal.

- :mod:`.core` — single-step, Smooth Pruning, DPM and iterative pruning on DPM's own selection;
- :mod:`.tpp` — TPP and TPP × DPM (under ``--host core``);
- :mod:`.depgraph` — Torch-Pruning's ``group_sl`` (sparse learning + progressive global pruning);
- :mod:`.otov2` — OTOv2's DHSPG optimiser over zero-invariant groups;
- :mod:`.gatedecorator` — Gate Decorator's gated BN, Taylor gate scores and Tick-Tock schedule.

The run spec (:mod:`dpm_lab.experiments.runspec`), the command line and the runner read hosts,
methods and their resolution from here: a new host is a new folder and one entry below.
"""
from ..experiments.host import HostEntry
from . import core, depgraph, gatedecorator, otov2, tpp

# folder -> entry; the order is the order of hosts and methods in the command line and reports
REGISTRY: dict[str, HostEntry] = {"core": core.ENTRY, "tpp": tpp.ENTRY,
                                  "depgraph": depgraph.ENTRY, "otov2": otov2.ENTRY,
                                  "gatedecorator": gatedecorator.ENTRY}
HOSTS = tuple(dict.fromkeys(e.host for e in REGISTRY.values()))
METHODS = {h: tuple(m for e in REGISTRY.values() if e.host == h for m in e.methods)
           for h in HOSTS}


def entry(host: str, method: str) -> HostEntry:
    """The entry that runs ``method`` on ``host`` (both already validated by the run spec)."""
    return next(e for e in REGISTRY.values() if e.host == host and method in e.methods)

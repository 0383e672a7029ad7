"""dpm_lab: the Decay Pruning Method (Smooth Pruning + Self-Rectifying) on Torch-Pruning.

``__version__`` is part of every run's identity: a record made by another version is never
reused for a run of this one.

``TRAINING_PATH_VERSION`` is part of it too (the resolved configuration's ``training_path``). It
counts changes to what a run computes that no option shows: the data loaders, augmentation and
batching (``data``), the engine's loop, schedule, optimiser and loss (``engine``), DDP batching
(``distributed``), model construction and initialisation (``models``). Bump it in the commit that
makes such a change, so that runs of the new code get new run ids instead of being mixed with,
or reused in place of, runs of the old code. ``tests/test_provenance.py`` pins a float64 smoke
run's loss history to it and fails until the bump and the new values land together. The package
version alone did not do this: it stayed 0.2.0 across such changes.

``dpm_lab.DecayPruner`` (DPM with Torch-Pruning's call pattern, :mod:`dpm_lab.pruner`) is loaded
on first use, so ``import dpm_lab`` stays light (no torch) for the command line and the tools.
"""
__version__ = "0.2.0"
TRAINING_PATH_VERSION = 1
__all__ = ["DecayPruner", "__version__"]


def __getattr__(name: str):
    if name == "DecayPruner":
        from .pruner import DecayPruner
        return DecayPruner
    raise AttributeError(f"module 'dpm_lab' has no attribute {name!r}")

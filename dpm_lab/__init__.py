"""dpm_lab: the Decay Pruning Method (Smooth Pruning + Self-Rectifying) on Torch-Pruning.

``__version__`` is part of every run's identity: a record made by another version is never
reused for a run of this one.

``TRAINING_PATH_VERSION`` is part of it too (the resolved configuration's ``training_path``). It
counts changes to what a run computes that no option shows: the data loaders, augmentation and
batching (``data``), the engine's loop, schedule, optimiser and loss (``engine``), DDP batching
(``distributed``), model construction and initialisation (``models``). Bump it in the commit that
makes such a change, so that runs of the new code get new run ids instead of being mixed with,
or reused in place of, runs of the old code. The package version alone did not do this: it
stayed 0.2.0 across such changes.

Two pins in ``tests/test_provenance.py`` fail until the bump and their new values land together,
and they cover part of the path only. (1) A float64 ResNet-20 smoke run's history (two epochs of
three steps on the CIFAR-10 slice: validation split, loaders, crop and flip, normalisation,
batching, the engine's loop, one-cycle schedule, Nesterov SGD with weight decay, label-smoothed
loss, the model's layers); its initialisation is replaced by integers, and the test skips where
the slice is missing. (2) ``get_model("resnet20")``'s initialisation under a fixed seed, built in
float64 (distributions, fan modes, draw order; to 1e-12, as float64 ``normal_`` differs in the
last bits across CPU kernels). Neither sees the other models, the float32 rounding of
initialisation, schedules, optimisers and options the smoke run does not use, DDP batching or
GPU kernels: a change there needs the bump without a test to ask for it.

``dpm_lab.DecayPruner`` (DPM with Torch-Pruning's call pattern, :mod:`dpm_lab.pruning.decay_pruner`)
is loaded on first use, so ``import dpm_lab`` stays light (no torch) for the command line and the
tools.
"""
__version__ = "0.2.0"
TRAINING_PATH_VERSION = 1
__all__ = ["DecayPruner", "__version__"]


def __getattr__(name: str):
    if name == "DecayPruner":
        from .pruning.decay_pruner import DecayPruner
        return DecayPruner
    raise AttributeError(f"module 'dpm_lab' has no attribute {name!r}")

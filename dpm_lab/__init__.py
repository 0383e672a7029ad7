"""dpm_lab: the Decay Pruning Method (Smooth Pruning + Self-Rectifying) on Torch-Pruning.

``__version__`` is part of every run's identity: a record made by another version is never
reused for a run of this one.
"""
__version__ = "0.2.0"

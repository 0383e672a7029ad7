"""Saving and loading checkpoints and pruned models without ever unpickling code.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects, and unpickling runs whatever
callable the file names (an object's ``__reduce__``): opening a checkpoint someone shared would
run their code. So everything this package saves is tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), checked before writing so that a run never leaves a file it
cannot load, and everything it loads goes through :func:`load_checkpoint`, which reads with
``weights_only=True`` and refuses any other object with an error that names the file.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import torch

from . import distributed
from .claims import writing

_PLAIN_VALUES = (str, int, float, bool, type(None))


def save_checkpoint(obj, path: str | os.PathLike) -> None:
    """Save ``obj`` (tensors and plain containers only) to ``path``: ``torch.save`` to a
    temporary file in the same folder, then a rename, so a crash never leaves half a file.

    Raises ``TypeError`` naming the first value that is not plain (nothing is written then).
    Under DDP every rank calls it and rank 0 writes while the others wait at a barrier.
    """
    _check_plain(obj, "checkpoint")
    if distributed.is_main():
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with writing(path) as tmp:
            torch.save(obj, tmp)
    distributed.barrier()


def load_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """What :func:`save_checkpoint` wrote, read with ``weights_only=True``: nothing in the file
    is executed. A file holding other objects (tampered, or not written by this package) raises
    ``ValueError`` naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} contains objects that are not weights (only tensors and plain "
                         "containers are loaded); refused without running any of it. A resume "
                         "checkpoint written before dpm_lab saved plain state is of this kind: "
                         "delete it to start that run over") from e


def _check_plain(obj, where: str) -> None:
    # Exact types: numpy's float64 subclasses float, and weights_only loading refuses it.
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_VALUES:
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            _check_plain(key, f"a key of {where}")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a "
                        "checkpoint holds only tensors and plain containers (convert it first)")

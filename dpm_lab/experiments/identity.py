"""The identity of a run, a dense model and a shared phase: the plain configuration dicts and
their hashes, by which records and checkpoints are named.

Why its own module: the run spec (:mod:`.runspec`) builds a pruning run's configuration from the
host folders, and a host folder names its own shared phases (DepGraph's sparse learning) by the
dense configuration and the same hash; both read the identity from here, below both.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from .. import TRAINING_PATH_VERSION, __version__
from ..training import distributed
from .profiles import Profile


def data_config(profile: Profile) -> dict:
    """The data part of a run's identity. ``batch_size`` is the global batch; under DDP each of
    ``world_size`` processes normalises its share in BatchNorm, which changes the numbers, so
    ``world_size`` joins the identity when above 1 (absent for one process, so single-process
    identities are those of before)."""
    config = {"dataset": profile.dataset, "n_train": profile.n_train, "n_test": profile.n_test,
              "val_fraction": profile.val_fraction, "val_seed": profile.val_seed,
              "batch_size": profile.batch_size}
    if distributed.world_size() > 1:
        config["world_size"] = distributed.world_size()
    return config


def precision_config(profile: Profile) -> dict:
    """The precision part of an identity: ``{"precision": "bf16"}``, and nothing for ``fp32``,
    the arithmetic every run had before the option existed, so their identities stand."""
    return {} if profile.precision == "fp32" else {"precision": profile.precision}


def dense_config(profile: Profile, seed: int) -> dict:
    """The identity of the dense checkpoint every method of a comparison starts from."""
    return {"version": __version__, "training_path": TRAINING_PATH_VERSION, "kind": "dense",
            "seed": seed, "model": profile.model, "data": data_config(profile),
            "train": asdict(profile.dense), **precision_config(profile)}


def config_hash(config: dict) -> str:
    """12 hex digits of the sha256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def comparable_id(config: dict) -> str:
    """The hash of a configuration without its seed: runs with equal ``comparable_id`` differ
    only in the seed, and only such runs are pooled into one mean."""
    return config_hash({k: v for k, v in config.items() if k != "seed"})


def canonical(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples become lists), for equality checks."""
    return json.loads(json.dumps(config, default=str))

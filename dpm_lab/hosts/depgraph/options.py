"""The DepGraph host's run options: sparse learning on or off, the speed-up target, and DPM's N
and prune phase; resolved into the run's configuration."""
from __future__ import annotations

from dataclasses import replace

from ...experiments.host import (check_fraction, checked_decay_steps, own_selection,
                                 prune_then_finetune)
from ...experiments.option_types import on_off, speedup
from ...experiments.profiles import Profile
from .recipe import depgraph_recipe

# the host's command-line options (flags, RunSpec field, argparse keywords; defaults are None:
# the recipe's value), listed by ``run --help`` and ``sweep --help`` under OPTION_GROUP
RUN_OPTIONS = (
    (("--sparse-learning",), "sparse_learning",
     dict(type=on_off, help="depgraph: on (default) or off, the 'w/o SL' variant")),
    (("--speedup",), "speedup", dict(type=speedup, help="depgraph: MACs speed-up target "
                                                        "(default: the recipe's)")),
)
OPTION_GROUP = ("DepGraph (--host depgraph)", "Torch-Pruning's group_sl")


def refusals(spec) -> dict[str, str]:
    """Its options outside the host; the core selection inside it."""
    if spec.host == "depgraph":
        return own_selection("depgraph", "DepGraph ranks channels by Torch-Pruning's group L2 "
                                         "magnitude")
    return {"speedup": "--speedup is the DepGraph host's target",
            "sparse_learning": "sparse learning belongs to the DepGraph host"}


def resolve(spec, profile: Profile):
    """The run options of the DepGraph host: its recipe with the spec's changes."""
    sl = True if spec.sparse_learning is None else spec.sparse_learning
    recipe = depgraph_recipe(profile, sl, spec.model)
    if spec.speedup is not None:
        if spec.speedup <= 1:
            raise ValueError(f"speed-up must be > 1, got {spec.speedup!r}")
        recipe = replace(recipe, speedup=spec.speedup)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=checked_decay_steps(spec.decay_steps))
    if spec.prune_phase is not None:
        check_fraction("prune phase", spec.prune_phase)
        recipe = replace(recipe, prune_phase=spec.prune_phase)
    # the host removes at once: N and rounds do not enter
    return prune_then_finetune(spec, profile, recipe, ("decay_steps", "prune_phase"))

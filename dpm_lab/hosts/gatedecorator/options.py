"""The Gate Decorator host's run options: its MACs target, DPM's N and what decays; resolved into
the run's configuration."""
from __future__ import annotations

from dataclasses import replace

from ...experiments.host import checked_decay_steps, own_selection, prune_then_finetune
from ...experiments.method import DECAY_METHODS
from ...experiments.profiles import Profile
from .algorithm import DECAY_SLICES
from .recipe import gatedecorator_recipe

# the host's command-line options (flags, RunSpec field, argparse keywords; defaults are None:
# the recipe's value), listed by ``run --help`` and ``sweep --help`` under OPTION_GROUP
RUN_OPTIONS = (
    (("--gate-decay",), "gate_decay",
     dict(choices=DECAY_SLICES, help="gatedecorator sp/dpm: what decays, the gates (gate, "
                                     "default) or the gates with their conv filters")),
)
OPTION_GROUP = ("Gate Decorator (--host gatedecorator)", "gated BN and Tick-Tock")


def refusals(spec) -> dict[str, str]:
    """Its option outside the host's decaying methods; the core selection (but its MACs target)
    and selection rounds inside it."""
    why = {}
    if spec.host == "gatedecorator":
        why.update(own_selection("gatedecorator", "Gate Decorator ranks gates by their Taylor "
                                                  "score", keeps_target_macs=True))
        why["prune_phase"] = "Gate Decorator selects after every tick until its MACs target"
    if spec.host != "gatedecorator" or spec.method not in DECAY_METHODS:
        why["gate_decay"] = ("what decays inside Gate Decorator: --host gatedecorator --method "
                             "sp/dpm")
    return why


def resolve(spec, profile: Profile):
    """The run options of the Gate Decorator host: its recipe with the spec's changes."""
    recipe = gatedecorator_recipe(profile, spec.model)
    if spec.target_macs is not None:
        if not 0 < spec.target_macs < 1:
            raise ValueError(f"target MACs must be in (0, 1), got {spec.target_macs!r}")
        recipe = replace(recipe, target_macs=spec.target_macs)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=checked_decay_steps(spec.decay_steps))
    if recipe.decay_steps > recipe.finish_ticks * recipe.tick_batches:
        raise ValueError(f"decay steps (N) {recipe.decay_steps} must be <= the "
                         f"{recipe.finish_ticks * recipe.tick_batches} steps of the finishing "
                         "ticks, so that every decay ends before the gates melt")
    if spec.gate_decay is not None:
        if spec.gate_decay not in DECAY_SLICES:
            raise ValueError(f"unknown gate decay {spec.gate_decay!r}; choose one of: "
                             f"{', '.join(DECAY_SLICES)}")
        recipe = replace(recipe, decay=spec.gate_decay)
    # the host masks at once: N and what decays do not enter
    return prune_then_finetune(spec, profile, recipe, ("decay_steps", "decay"))

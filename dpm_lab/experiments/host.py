"""What a host folder (``dpm_lab/hosts/<host>/``) gives the experiment machinery, and the helpers
its run options resolve with.

Why: a host (DepGraph, OTOv2, Gate Decorator), or a family of methods on DPM's own selection
(core, TPP), is one folder holding its algorithm, its :class:`~dpm_lab.experiments.method.Method`
classes, its recipe and its run options. The folder describes itself in one :class:`HostEntry`,
and the registry (:mod:`dpm_lab.hosts`) lists the entries; the run spec, the command line and the
runner read everything host-specific from there, so a new host is a new folder and one registry
entry.

Recipes: DPM's authors kept each framework's original configuration (the DPM paper, §4); the
``paper`` recipes are those configurations, one per row of the paper's tables. The ``mini``
recipes shrink them to minutes on a CPU, keeping their shape (DepGraph: sparse learning, then
pruning, then fine-tuning; OTOv2: one training run that prunes as it goes); ``smoke`` only
exercises the code. ``full`` (all of CIFAR-10) has DepGraph's recipe only, the one its issue
measures: OTOv2, TPP and Gate Decorator refuse it, naming the profiles they have recipes for,
rather than run a recipe nobody chose for it. Within a recipe, host, host + SP and host + DPM
train the same epochs from the same starting checkpoint, so the comparison is fair.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

from .profiles import Profile


@dataclass(frozen=True)
class HostEntry:
    """One folder's entry in the registry. ``host``: the ``--host`` its methods run under (TPP's
    methods run under ``core``); ``methods``: each ``--method`` name with the
    :class:`~dpm_lab.experiments.method.Method` class that runs it; ``resolve(spec, profile)``:
    the run's ``(profile, train, dense, options, recipe)`` (see
    :func:`dpm_lab.experiments.runspec.resolve`); ``in_default_sweep``: whether a sweep that names
    no method runs these methods (TPP's run only when named); ``refusals(spec)``: the options
    that do not apply to ``spec`` in this folder's view (its own options outside it, and the ones
    it has no use for inside it), each with the reason (see
    :func:`dpm_lab.experiments.runspec.inapplicable`); ``options``: the folder's own
    command-line options, as entries of :data:`dpm_lab.experiments.options.RUN_OPTIONS`, which
    ``--help`` lists under the heading ``option_group`` (title, text)."""

    host: str
    methods: dict
    resolve: Callable
    in_default_sweep: bool = True
    refusals: Callable = lambda spec: {}
    options: tuple = ()
    option_group: tuple[str, str] | None = None


def own_selection(host: str, ranks: str, keeps_target_macs: bool = False) -> dict[str, str]:
    """The core selection options a host has no use for, since it ``ranks`` its channels itself
    (and takes its own target, except Gate Decorator's ``--target-macs``)."""
    why = {"criterion": f"the {host} host chooses its channels itself ({ranks})"}
    why["calibration_batches"] = why["criterion"]
    for o in ("channel_ratio",) if keeps_target_macs else ("target_macs", "channel_ratio"):
        why[o] = ("hosts take --speedup (depgraph), --target-sparsity (otov2) or "
                  "--target-macs (gatedecorator)")
    return why


def no_recipe(what: str, profile: Profile, profiles: tuple[str, ...]) -> ValueError:
    """The error for a host (or TPP) asked to run a profile it has no recipe for: a recipe is a
    choice made for the profile's data and budget (``full``'s OTOv2 λ, say, is not mini's),
    never one silently borrowed from another profile."""
    return ValueError(f"{what} has no recipe for profile {profile.name!r}; its recipes "
                      f"are for the profiles: {', '.join(profiles)}")


RECIPE_FIELDS = ("lr", "schedule", "nesterov", "label_smoothing", "weight_decay")


def with_recipe_overrides(train, spec):
    """The pruning phase's TrainConfig with the spec's recipe overrides (validated again)."""
    train = train if spec.epochs is None else train.with_epochs(spec.epochs)
    changes = {k: getattr(spec, k) for k in RECIPE_FIELDS if getattr(spec, k) is not None}
    return replace(train, **changes) if changes else train


def checked_decay_steps(n) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"decay steps (N) must be an integer >= 1, got {n!r}")
    return n


def check_fraction(name: str, value, low_open=True) -> None:
    ok = (0 < value <= 1) if low_open else (0 <= value < 1)
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1)'}, got {value!r}")


def prune_then_finetune(spec, profile: Profile, recipe, not_for_host: tuple):
    """A host that prunes, then fine-tunes from the dense checkpoint: its resolved parts, the
    options in ``not_for_host`` left out of ``--method host``'s identity."""
    recipe = replace(recipe, finetune=with_recipe_overrides(recipe.finetune, spec))
    profile = profile.with_(model=recipe.model)
    options = recipe.to_dict()
    options.pop("finetune")
    options.pop("model")
    if spec.method == "host":
        for o in not_for_host:
            options.pop(o)
    return profile, recipe.finetune, asdict(profile.dense), options, recipe

"""TPP's run options: its layer-wise ratio, its recipe, and what TPP × DPM does with a released
filter; resolved into the run's configuration."""
from __future__ import annotations

from dataclasses import asdict, replace

from ...experiments.host import checked_decay_steps, with_recipe_overrides
from ...experiments.profiles import Profile
from .recipe import tpp_recipe

TPP_METHODS = ("tpp", "tpp+dpm")
# TPP x DPM: a released filter is not replaced (leave, TPP selects once), or the next smallest-L1
# free filter of its layer takes its place at the next round (replace), keeping the layer ratio
TPP_RELEASED = ("leave", "replace")


def refusals(spec) -> dict[str, str]:
    """Its layer-wise ratio outside TPP and its L1 baseline; the core selection inside TPP."""
    why = {}
    if spec.host != "core" or spec.method not in ("single-step",) + TPP_METHODS:
        why["layer_ratio"] = ("a layer-wise ratio is TPP's target: --method tpp, tpp+dpm, and "
                              "single-step (TPP's L1 baseline)")
    if spec.method in TPP_METHODS:
        why["criterion"] = "TPP ranks the filters of each chosen layer by their L1 norm"
        why["calibration_batches"] = why["criterion"]
        for o in ("target_macs", "channel_ratio"):
            why[o] = "TPP prunes a ratio of every chosen layer: --layer-ratio"
    if spec.method == "tpp+dpm":  # tpp: no rounds at all, the method-level reason
        why["prune_phase"] = "TPP selects once, before regularising"
    return why


def resolve(spec, profile: Profile):
    """The run options of TPP and TPP × DPM (also the layers and ratio of single-step's
    ``--layer-ratio``, TPP's L1 baseline)."""
    if spec.layer_ratio is not None and not 0 < spec.layer_ratio < 1:
        raise ValueError(f"layer ratio must be in (0, 1), got {spec.layer_ratio!r}")
    recipe = tpp_recipe(profile, profile.model, spec.layer_ratio)
    if spec.decay_steps is not None:
        recipe = replace(recipe, decay_steps=checked_decay_steps(spec.decay_steps))
    recipe = replace(recipe, finetune=with_recipe_overrides(recipe.finetune, spec))
    options = recipe.to_dict()
    options.pop("finetune")
    options["target"] = {k: options.pop(k) for k in ("layer_ratio", "layers", "exclude")}
    if spec.method == "tpp":  # hard zeroing: no decay
        options.pop("decay_steps")
    if spec.released not in (None,) + TPP_RELEASED:
        raise ValueError(f"unknown released {spec.released!r} for --method tpp+dpm; choose one "
                         f"of: {', '.join(TPP_RELEASED)}")
    if spec.released == "replace":  # "leave", TPP's one selection, is the default: not recorded
        options["released"] = "replace"
    return profile, recipe.finetune, asdict(profile.dense), options, recipe

"""The OTOv2 host's run options: the target group sparsity, DPM's N, and the deviations of DHSPG
for DPM (each off, OTOv2's behaviour, by default); resolved into the run's configuration."""
from __future__ import annotations

from dataclasses import asdict, replace

from ...experiments.host import checked_decay_steps, own_selection, with_recipe_overrides
from ...experiments.method import DECAY_METHODS
from ...experiments.option_types import on_off, open_fraction
from ...experiments.profiles import Profile
from ...training.models import PRETRAINED
from .algorithm import L_INIT_AT, RELEASED_GROUPS, SR_SIGNALS
from .recipe import otov2_recipe

# OTOv2 + DPM: deviations from DHSPG, off (OTOv2's behaviour) by default
OTOV2_DPM_OPTIONS = ("lasso_while_decaying", "l_init_at", "released")

# the host's command-line options (flags, RunSpec field, argparse keywords; defaults are None:
# the recipe's value), listed by ``run --help`` and ``sweep --help`` under OPTION_GROUP
RUN_OPTIONS = (
    (("--target-sparsity",), "target_sparsity",
     dict(type=open_fraction, help="otov2: target group sparsity (default: the recipe's)")),
    (("--lasso-while-decaying",), "lasso_while_decaying",
     dict(type=on_off, help="otov2 sp/dpm: decaying groups keep DHSPG's group-lasso term "
                            "(on, OTOv2's behaviour) or lose it (off, a deviation)")),
    (("--l-init-at",), "l_init_at",
     dict(choices=L_INIT_AT, help="otov2 sp/dpm: the decay starts from the norm at the "
                                  "projection test (projection, default) or at the trial point")),
    (("--released",), "released",
     dict(choices=RELEASED_GROUPS, help="otov2 dpm: a released group stays in G_p (stay, "
                                        "default), leaves it (leave) or is replaced (replace); "
                                        "tpp+dpm: leave (default) or replace, by the next "
                                        "smallest-L1 filter of its layer")),
    (("--sr-signal",), "sr_signal",
     dict(choices=SR_SIGNALS, help="otov2 dpm: what Self-Rectifying reads, the raw loss gradient "
                                   "(gradient, default) or DHSPG's step direction (update)")),
)
OPTION_GROUP = ("OTOv2 (--host otov2)", "DHSPG, and what DPM changes in it")


def refusals(spec) -> dict[str, str]:
    """Its options outside the host, or outside the methods they change; the core selection and
    selection rounds inside it."""
    why = {}
    if spec.host == "otov2":
        why.update(own_selection("otov2", "OTOv2's DHSPG optimiser ranks groups itself"))
        why["prune_phase"] = ("OTOv2 has no selection rounds: groups start decaying when "
                              "DHSPG's projection fires")
    else:
        why["target_sparsity"] = "--target-sparsity is the OTOv2 host's target"
    deviation = "a deviation of DHSPG for DPM: applies to --host otov2 --method sp or dpm"
    if spec.host != "otov2" or spec.method not in DECAY_METHODS:
        why.update(lasso_while_decaying=deviation, l_init_at=deviation)
    if spec.host != "otov2" and spec.method == "dpm":  # elsewhere Self-Rectifying's rules apply
        why["released"] = deviation
    if spec.host != "otov2" or spec.method != "dpm":
        why["sr_signal"] = ("what Self-Rectifying reads inside DHSPG: applies to --host otov2 "
                            "--method dpm")
    return why


def resolve(spec, profile: Profile):
    """The run options of the OTOv2 host: its recipe with the spec's changes, and the
    deviations of DHSPG that DPM asks for."""
    default_model = None if profile.name == "paper" else profile.model
    recipe = otov2_recipe(profile, spec.model or default_model, spec.target_sparsity)
    if not 0 < recipe.target_sparsity < 1:
        raise ValueError(f"target sparsity must be in (0, 1), got {recipe.target_sparsity!r}")
    if spec.decay_steps is not None:  # also ends DHSPG's projections N steps before the end
        recipe = replace(recipe, decay_steps=checked_decay_steps(spec.decay_steps))
    recipe = replace(recipe, train=with_recipe_overrides(recipe.train, spec),
                     **{k: getattr(spec, k) for k in OTOV2_DPM_OPTIONS
                        if getattr(spec, k) is not None})
    if recipe.l_init_at not in L_INIT_AT:
        raise ValueError(f"unknown l_init_at {recipe.l_init_at!r}; choose one of: "
                         f"{', '.join(L_INIT_AT)}")
    if recipe.released not in RELEASED_GROUPS:
        raise ValueError(f"unknown released {recipe.released!r}; choose one of: "
                         f"{', '.join(RELEASED_GROUPS)}")
    profile = profile.with_(model=recipe.model, batch_size=recipe.batch_size or profile.batch_size)
    options = recipe.to_dict()
    options.pop("train")
    options.pop("model")
    if spec.method == "host":  # DHSPG alone: projections run to the end, no decay options
        for o in ("decay_steps",) + OTOV2_DPM_OPTIONS:
            options.pop(o)
    elif spec.method == "sp":
        options.pop("released")
    if spec.sr_signal not in (None,) + SR_SIGNALS:
        raise ValueError(f"unknown sr_signal {spec.sr_signal!r}; choose one of: "
                         f"{', '.join(SR_SIGNALS)}")
    if spec.sr_signal not in (None, SR_SIGNALS[0]):  # a deviation only, as TPP's released: the
        options["sr_signal"] = spec.sr_signal         # default named or not is one run, one id
    if recipe.from_dense is not True and (spec.dense_epochs, spec.dense_lr) != (None, None):
        start = "torchvision's pretrained weights" if recipe.from_dense else "scratch"
        raise ValueError(f"--dense-epochs and --dense-lr do not apply to --host otov2 with the "
                         f"{profile.name} recipe of {recipe.model}: it starts from {start}, not "
                         f"from a dense checkpoint")
    dense = ({"torchvision_weights": PRETRAINED[profile.model]} if recipe.from_dense == "torchvision"
             else asdict(profile.dense) if recipe.from_dense else None)
    return profile, recipe.train, dense, options, recipe

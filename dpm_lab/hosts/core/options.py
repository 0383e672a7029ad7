"""The core methods' run options: their target (a MACs ratio, a channel ratio, or TPP's layer-wise
ratio for single-step), criterion, selection rounds and, for iterative pruning, its k rounds of
removal; each resolved into the run's configuration."""
from __future__ import annotations

from dataclasses import asdict

from ...experiments.host import check_fraction, checked_decay_steps, with_recipe_overrides
from ...experiments.method import DEFAULT_PRUNE_PHASE
from ...experiments.profiles import Profile
from ...pruning.iterative import SCHEDULES
from ...pruning.selection import CRITERIA
from ..tpp.options import TPP_METHODS, resolve as resolve_tpp

# iterative pruning: Torch-Pruning's default scheduler (linear); k defaults to DPM's round count
CORE_DEFAULTS = {"target_macs": 0.5, "criterion": "l2", "prune_phase": DEFAULT_PRUNE_PHASE,
                 "calibration_batches": 4, "prune_schedule": "linear"}


def refusals(spec) -> dict[str, str]:
    """Iterative pruning's options outside it; the calibration batches without a gradient
    criterion."""
    why = {}
    if spec.method != "iterative":
        why["iterative_steps"] = "k removal rounds apply only to --method iterative"
        why["prune_schedule"] = "the schedule of removal rounds applies only to --method iterative"
    if spec.host == "core" and spec.method not in TPP_METHODS and (
            spec.criterion or CORE_DEFAULTS["criterion"]) != "taylor":
        why["calibration_batches"] = ("calibration batches compute the gradients of "
                                      "--criterion taylor only")
    return why


def resolve(spec, profile: Profile):
    """The run options of single-step, SP, DPM and iterative pruning on DPM's own selection."""
    given = [f for f in ("target_macs", "channel_ratio", "layer_ratio")
             if getattr(spec, f) is not None]
    if len(given) > 1:
        raise ValueError("give only one of --target-macs, --channel-ratio and --layer-ratio, "
                         f"not both {' and '.join('--' + g.replace('_', '-') for g in given)}")
    if spec.layer_ratio is not None:  # TPP's L1 baseline: its layers, by filter L1, at once
        if spec.criterion is not None:
            raise ValueError(f"--criterion {spec.criterion!r} does not apply with --layer-ratio: "
                             "a layer-wise target ranks filters by their L1 norm, as TPP does")
        recipe = resolve_tpp(spec, profile)[4]
        options = {"target": {"layer_ratio": recipe.layer_ratio, "layers": recipe.layers,
                              "exclude": recipe.exclude}, "criterion": "filter-l1"}
        finetune = with_recipe_overrides(profile.finetune, spec)
        return profile, finetune, asdict(profile.dense), options, None
    if spec.channel_ratio is not None:
        if not 0 < spec.channel_ratio < 1:
            raise ValueError(f"channel ratio must be in (0, 1), got {spec.channel_ratio!r}")
        target = {"channel_ratio": spec.channel_ratio}
    else:
        macs = CORE_DEFAULTS["target_macs"] if spec.target_macs is None else spec.target_macs
        check_fraction("target MACs", macs)
        target = {"macs": macs}
    criterion = spec.criterion or CORE_DEFAULTS["criterion"]
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    options = {"target": target, "criterion": criterion}
    if criterion == "taylor":
        cb = spec.calibration_batches or CORE_DEFAULTS["calibration_batches"]
        if cb < 1:
            raise ValueError(f"calibration batches must be >= 1, got {cb!r}")
        options["calibration_batches"] = cb
    if spec.method != "single-step":
        options["decay_steps"] = checked_decay_steps(spec.decay_steps or profile.decay_steps)
        phase = CORE_DEFAULTS["prune_phase"] if spec.prune_phase is None else spec.prune_phase
        check_fraction("prune phase", phase)
        options["prune_phase"] = phase
    if spec.method == "iterative":
        options.update(_iterative(spec))
    finetune = with_recipe_overrides(profile.finetune, spec)
    return profile, finetune, asdict(profile.dense), options, None


def _iterative(spec) -> dict:
    """Iterative pruning's own options: k (``None``: as many rounds as DPM's at the run's N and
    prune phase, known once the steps per epoch are) and the schedule of the rounds."""
    k = spec.iterative_steps
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"iterative steps (k) must be an integer >= 1, got {k!r}")
    schedule = spec.prune_schedule or CORE_DEFAULTS["prune_schedule"]
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown prune schedule {schedule!r}; choose one of: "
                         f"{', '.join(SCHEDULES)}")
    return {"iterative_steps": k, "prune_schedule": schedule}
